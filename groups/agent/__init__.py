"""clawgate agent runtime: the stdlib-only process that runs inside each group's sandbox.

It is copied into the image at ``/opt/clawgate/agent/`` and started as ``python3 -m agent``,
so every intra-package import is relative; the same code is importable as ``groups.agent``
from the repository for tests. Nothing here may import a third-party package.
"""
