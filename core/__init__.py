"""Plain data and settings every package may use: the configuration, the data model, file paths.

`core` imports nothing else from the project, so channels, groups, proxy and the gateway can all
depend on it without depending on each other (tests/unit/test_layering.py enforces this).
"""
