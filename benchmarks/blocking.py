"""Run a benchmark's coroutine to completion from synchronous code, inside a loop or not.

`make bench` calls each benchmark's `run()` from plain code, but a benchmark may also be
called from a test or a notebook whose event loop is already running, where `asyncio.run`
refuses; there the coroutine gets a fresh loop in a worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any


def run_blocking[T](make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
