"""Vault process entry point: `python -m proxy --config-dir … --state-dir … …`.

mitmproxy keeps global state (ctx.options, ctx.master) and decrypted secrets live in
memory here, so the vault runs as its own process: the gateway never holds secret
values, and a vault crash cannot take the gateway down (it is restarted; see process.py).
mitmproxy, the group relay and the control server share one asyncio loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from mitmproxy import options
from mitmproxy.addons import (
    block,
    core,
    disable_h2c,
    dns_resolver,
    errorcheck,
    next_layer,
    proxyserver,
    termlog,
    tlsconfig,
    update_alt_svc,
)
from mitmproxy.master import Master

from core.config import ConfigError
from core.logfile import RotatingStream
from core.paths import ensure_private_dir
from proxy.addon import VaultAddon, parse_hostport
from proxy.audit import AUDIT_FILE, AuditAddon, AuditLog
from proxy.bodies import STREAM_ABOVE, BodyGate, EarlyResponder, cut_client
from proxy.budget import VaultBudgets
from proxy.control import ControlServer
from proxy.leaks import LeakAddon
from proxy.meter_addon import MeterAddon
from proxy.peers import PeerRegistry
from proxy.pinning import PinAddon
from proxy.policy import POLICY_FILE, load_policy
from proxy.relay import Relay
from proxy.secrets import SecretStore, VaultError
from proxy.stats import VaultStats
from proxy.usage_report import UsageReporter

log = logging.getLogger("clawgate.vault")

CA_PUBLIC_CERT = "mitmproxy-ca-cert.pem"  # public half only; mitmproxy-ca.pem holds the private key


def ca_cert_path(state_dir: Path) -> Path:
    """The CA certificate containers should trust (never the key-bearing mitmproxy-ca.pem)."""
    return Path(state_dir) / "ca" / CA_PUBLIC_CERT


class _Ready:
    """Tiny addon: fires once mitmproxy's listeners are up."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def running(self) -> None:
        self.event.set()


def _bound_port(master: Master) -> int:
    """The TCP port mitmproxy's listener is bound to (asked for as 0, so the kernel's choice)."""
    server = master.addons.get("proxyserver")
    ports = {addr[1] for addr in server.listen_addrs()}
    if len(ports) != 1:
        raise RuntimeError(f"expected one mitmproxy listener, found {sorted(ports)}")
    return int(ports.pop())


def watch_parent(loop: asyncio.AbstractEventLoop, fd: int, stop: Callable[[], None]) -> None:
    """Stop when the gateway's end of the lifeline pipe closes (it died, however it died).

    A parent-death signal would fire when the *thread* that forked exits, and a PID
    check races with PID reuse; a pipe's EOF is exactly "no process holds the write end".
    """
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            print("clawgate vault: the gateway is gone; stopping", file=sys.stderr, flush=True)
            stop()

    loop.add_reader(fd, readable)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m proxy", description="clawgate credential vault")
    p.add_argument("--config-dir", type=Path, required=True, help="holds master.key and secrets.json")
    p.add_argument("--state-dir", type=Path, required=True, help="CA and runtime state")
    p.add_argument("--control-socket", type=Path, required=True)
    # 0 (the default): the kernel picks a free port when mitmproxy binds, and the control
    # socket's `ping` reports it. A port chosen beforehand by the gateway could be taken by
    # another process between the choice and the bind.
    p.add_argument("--listen-port", type=int, default=0)
    p.add_argument("--allow-private", action="append", default=[], metavar="HOST:PORT")
    p.add_argument(
        "--upstream-ca",
        type=Path,
        default=None,
        help="PEM CA bundle used INSTEAD of the system store to verify upstreams (private CAs, tests)",
    )
    p.add_argument(
        "--parent-fd",
        type=int,
        default=None,
        help="read end of a pipe the gateway holds open; EOF means the gateway died, so stop",
    )
    p.add_argument("--verbose", action="store_true", help="log connections and injections (never values)")
    p.add_argument(
        "--gateway-socket", type=Path, default=None, help="gateway control socket, told about blocked leaks"
    )
    p.add_argument(
        "--log-file", type=Path, default=None, help="write output here, rotated by size like gateway.log"
    )
    args = p.parse_args(argv)
    for a in args.allow_private:
        try:
            parse_hostport(a)
        except ValueError as e:
            p.error(f"--allow-private: {e}")
    return args


def _raise_nofile() -> None:
    """Use the hard descriptor limit: every group may hold its connection cap at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("vault: cannot raise the descriptor limit from %s: %s", soft, e)


async def run(args: argparse.Namespace) -> int:
    _raise_nofile()
    store = SecretStore(args.config_dir)
    try:
        secrets = await asyncio.to_thread(store.load_all)
    except VaultError as e:
        print(f"clawgate vault: cannot load secrets: {e}", file=sys.stderr, flush=True)
        return 2

    confdir = ensure_private_dir(Path(args.state_dir) / "ca")
    opts = options.Options(listen_host="127.0.0.1", listen_port=args.listen_port, confdir=str(confdir))
    master = Master(opts)
    # Only what a forward proxy needs. mitmproxy hands every event to every addon, so the
    # thirty-odd interactive defaults of mitmdump (replay, export, cookies, ...) would each
    # cost time on every request without doing anything for the vault.
    master.addons.add(
        termlog.TermLog(),
        core.Core(),
        block.Block(),
        disable_h2c.DisableH2C(),
        proxyserver.Proxyserver(),
        dns_resolver.DnsResolver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        update_alt_svc.UpdateAltSvc(),
        errorcheck.ErrorCheck(),
    )
    opts.update(
        connection_strategy="lazy",
        termlog_verbosity="info" if args.verbose else "warn",
        ssl_insecure=False,  # upstream certificates are verified against the pinned name (proxy/pinning.py)
        # Never buffer a body above this (proxy/bodies.py streams it). `body_size_limit` stays
        # unset: mitmproxy applies it to responses too, before any hook, which would cap
        # downloads; request sizes are enforced by the vault itself (413 or cut).
        stream_large_bodies=str(STREAM_ABOVE),
    )
    if args.upstream_ca is not None:
        opts.update(ssl_verify_upstream_trusted_ca=str(args.upstream_ca))
    registry = PeerRegistry()
    addon = VaultAddon(registry, args.allow_private)
    addon.set_secrets(secrets)
    try:  # [vault] egress / rate_limit / size limits / unscoped from config.toml
        policy = load_policy(args.config_dir, Path(args.state_dir) / POLICY_FILE)
    except ConfigError as e:
        print(f"clawgate vault: {e}", file=sys.stderr, flush=True)
        return 2
    addon.holder.gateway_socket = args.gateway_socket  # held requests ask the owner (proxy/holds.py)
    addon.set_policy(policy)
    addon.usage_store = store
    addon.budgets = VaultBudgets()  # the gateway pushes limits over the control socket
    stats = VaultStats()
    audit = AuditAddon(AuditLog(Path(args.state_dir) / AUDIT_FILE), addon.group_of, stats)
    addon.on_held = audit.held
    leaks = LeakAddon(addon.group_of, args.gateway_socket)

    def unscoped(group: str, secret: str, host: str, refused: bool) -> None:
        message = {"op": "unscoped", "group": group, "secret": secret, "host": host, "refused": refused}
        leaks.notices.once(("unscoped", group, host), message)

    addon.enforcer.on_unscoped = unscoped
    leaks.set_secrets(secrets)
    pin = PinAddon(addon.group_of)
    relay = Relay(
        registry,
        args.listen_port,
        max_connections=policy.max_connections_per_group,
        idle_timeout_s=policy.idle_timeout_s,
    )
    responder = EarlyResponder()
    internal = await responder.start()
    addon.internal.add(internal)
    pin.internal.add(internal)
    gate = BodyGate(
        leaks.scanner,
        responder,
        cut_client(relay.abort_peer),
        leaks.report,
        lambda: addon.enforcer.policy.max_request_bytes,
    )
    # Metered usage goes to the gateway (proxy/usage_report.py); what an earlier run left
    # unacknowledged in the spool is sent again.
    reporter = UsageReporter(Path(args.state_dir), args.gateway_socket)
    reporter.load()
    meter = MeterAddon(addon.group_of, reporter)
    meter.listeners.append(addon.budgets.on_usage)  # headroom shrinks before the client has the end
    ready = _Ready()
    # Order matters: audit sees the request as sent; pinning refuses a request naming another
    # host before the leak scan, the egress check and injection (VaultAddon) run; the body
    # gate acts on all of their decisions; metering chains the gate's request stream and the
    # size cap's response stream, and sees a response before the audit log's tail, which
    # writes the response's line, does (so the line carries the meter's `spend` verdict).
    # The stream watch (proxy/stream_watch.py) only has to come after mitmproxy's NextLayer.
    master.addons.add(audit, pin, leaks, addon, addon.streams, gate, meter, audit.tail, ready)

    async def reload_secrets() -> int:
        loaded = await asyncio.to_thread(store.load_all)
        addon.set_secrets(loaded)
        leaks.set_secrets(loaded)
        return len(loaded)

    control = ControlServer(
        args.control_socket, relay, reload_secrets, ca_cert_path(args.state_dir), stats, addon.budgets
    )

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, master.shutdown)
    if args.parent_fd is not None:
        watch_parent(loop, args.parent_fd, master.shutdown)

    master_task = asyncio.create_task(master.run())
    ready_task = asyncio.create_task(ready.event.wait())
    await asyncio.wait({master_task, ready_task}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.event.is_set():
        ready_task.cancel()
        print("clawgate vault: mitmproxy failed to start", file=sys.stderr, flush=True)
        return 1
    relay.target = ("127.0.0.1", _bound_port(master))  # before any group socket is opened
    reporter.start()
    try:
        await control.start()  # only now: a successful ping means the proxy is listening
        print(
            f"clawgate vault: listening on 127.0.0.1:{relay.target[1]}, control {args.control_socket}",
            file=sys.stderr,
            flush=True,
        )
        await master_task
    finally:
        await control.close()
        await reporter.close()
        await relay.close_all()
        await responder.close()
        if not master_task.done():
            master.shutdown()
            await master_task
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.log_file is not None:
        # Python-level output (TermLog, prints, tracebacks) goes through the rotating stream;
        # the inherited stdout/stderr descriptors stay on vault.log for anything below Python.
        stream = RotatingStream(args.log_file)
        sys.stdout = sys.stderr = stream
    try:
        code = asyncio.run(run(args))
    except SystemExit as e:  # mitmproxy's errorcheck exits on startup errors
        code = e.code if isinstance(e.code, int) else 1
    sys.exit(code)


if __name__ == "__main__":
    main()
