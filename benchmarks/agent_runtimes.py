"""The two agent runtimes side by side: what each adds to a turn, and the claude runtime's cold start.

- `builtin_warm_turn_overhead_ms` / `claude_warm_turn_overhead_ms`: message in → reply out
  through the real gateway with the group's sandbox already running, minus the time the
  fake model server itself spent answering (`FakeModelServer.busy_s`), p50 over
  BENCH_RUNTIME_TURNS turns each, same run, same fake model (one echo answer per turn).
- `claude_cold_start_p50_ms`: the same for a brand-new container of the claude image
  (Python, the SDK and the Claude Code CLI starting), next to `builtin_cold_turn_p50_ms`.

The claude figures need the claude image (`clawgate image build --runtime claude`, or
CLAWGATE_BENCH_CLAUDE_IMAGE); without it they are reported as null with the reason.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from benchmarks.harness import IMAGE, bench_gateway
from core.config import claude_variant

TURNS = int(os.environ.get("BENCH_RUNTIME_TURNS", "10"))
COLD = int(os.environ.get("BENCH_RUNTIME_COLD", "3"))
CLAUDE_IMAGE = os.environ.get("CLAWGATE_BENCH_CLAUDE_IMAGE", claude_variant(IMAGE))


def _ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


async def _measure(runtime: str) -> tuple[list[float], list[float]]:
    extra = f'[agent]\nruntime = "{runtime}"\nclaude_image = "{CLAUDE_IMAGE}"\n'
    async with bench_gateway("docker", extra_toml=extra, model_key=True) as bench:
        cold = []
        for i in range(COLD + 1):  # the first start also warms the page cache: not counted
            await bench.gateway.pool.stop("main")
            cold.append(await bench.turn_overhead(f"cold {runtime} {i}"))
        warm = [await bench.turn_overhead(f"warm {runtime} {i}") for i in range(TURNS + 1)][1:]
    return warm, cold[1:]


def _claude_image_problem() -> str | None:
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env()
        client.images.get(CLAUDE_IMAGE)
    except DockerException as exc:
        return f"no claude image {CLAUDE_IMAGE} ({type(exc).__name__}): clawgate image build --runtime claude"
    return None


async def run() -> dict[str, Any]:
    warm_builtin, cold_builtin = await _measure("builtin")
    result: dict[str, Any] = {
        "builtin_warm_turn_overhead_ms": _ms(warm_builtin),
        "builtin_cold_turn_p50_ms": _ms(cold_builtin),
        "runtime_turns": TURNS,
    }
    problem = _claude_image_problem()
    if problem is not None:
        return {
            **result,
            "claude_warm_turn_overhead_ms": None,
            "claude_cold_start_p50_ms": None,
            "claude_unusable": problem,
        }
    warm_claude, cold_claude = await _measure("claude")
    return {
        **result,
        "claude_warm_turn_overhead_ms": _ms(warm_claude),
        "claude_cold_start_p50_ms": _ms(cold_claude),
        "claude_vs_builtin_warm": round(statistics.median(warm_claude) / statistics.median(warm_builtin), 2),
    }


if __name__ == "__main__":
    import asyncio
    import json

    print(json.dumps(asyncio.run(run())))
