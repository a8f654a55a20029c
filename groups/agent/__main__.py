"""Entry point (``python3 -m agent``): relay up, IPC connected, then serve turns forever.

Exit codes: 0 when the gateway closes the IPC socket or sends SIGTERM (normal stop),
1 when the sandbox is unusable (relay port or IPC socket unavailable), 2 on bad config.
Heavy modules (urllib/ssl via the model client) are imported in a background thread while
we wait for the first message, so cold start stays fast.
"""

import contextlib
import json
import sys
import threading
import time

from . import boot, config
from .ipc_client import IPCClient, IPCClosed, IPCError


def _stderr(level: str, message: str) -> None:
    sys.stderr.write(f"clawgate-agent {level}: {message}\n")
    sys.stderr.flush()


def _prewarm() -> None:
    """Import the model/tool stack off the critical path (imports are thread-safe)."""
    try:
        import http.client  # noqa: F401
        import urllib.request  # noqa: F401

        from . import compaction, history, llm, prompt, tools, turn  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - the real import will report it properly
        _stderr("warning", f"prewarm failed: {exc}")


def serve(cfg: config.Config, client: IPCClient) -> int:
    """The main loop; returns the exit code when the gateway goes away."""
    from . import history, llm, prompt, tools, turn

    def log(level: str, message: str) -> None:
        _stderr(level, message)
        with contextlib.suppress(IPCError):
            client.log(level, message[:8000])

    provider = llm.make_provider(cfg)
    toolbox = tools.Toolbox(cfg.group_dir, client.send_message, ipc_call=client.call)
    store = history.HistoryStore(cfg.group_dir, provider.name, provider.is_turn_start)
    runner = turn.TurnRunner(
        provider,
        store,
        lambda: prompt.build_system_prompt(cfg),
        toolbox.execute,
        log,
        max_iterations=cfg.max_model_calls,
        budget_tokens=cfg.history_budget_tokens,
    )
    while True:
        try:
            run_id, user_prompt = client.next_messages()
        except IPCError as exc:
            log("error", f"next_messages failed: {exc}")
            time.sleep(1.0)  # don't spin if the gateway keeps refusing
            continue
        try:
            client.received(run_id)
        except IPCError as exc:  # only a latency metric; never worth dropping the turn
            log("warning", f"received({run_id}) failed: {exc}")
        text, error = runner.run(user_prompt)
        for report in runner.usage.reports():  # for the sandbox's log only: spend is metered by the vault
            _stderr("info", f"run {run_id} used {json.dumps(report, sort_keys=True)}")
        try:
            client.turn_done(run_id, text, error)
        except IPCError as exc:
            log("error", f"turn_done({run_id}) rejected: {exc}")


def main() -> int:
    cfg = boot.prepare(_stderr)
    if isinstance(cfg, int):
        return cfg
    threading.Thread(target=_prewarm, name="prewarm", daemon=True).start()
    client = boot.connect(cfg, _stderr)
    if isinstance(client, int):
        return client
    try:
        return serve(cfg, client)
    except IPCClosed:
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
