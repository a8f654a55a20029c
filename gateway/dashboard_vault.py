"""The dashboard's Vault page, gateway side: secrets through the CLI's code, policies, the audit log.

Adding, rotating, scoping and removing a secret call proxy/secret_ops.py — the functions behind
`clawgate vault add|rotate|scope|remove` — so the page validates exactly like the CLI; then the
running vault re-reads its secrets (`VaultProcess.reload_secrets`, the `reload_secrets` control
request the CLI sends over the vault's control socket). Only an admin may (the session's
identity is checked at each request, as for every dashboard action). A value goes from the form
to the store and nowhere else: no answer, log line or page carries it (the messages here are
built from names and rules; `VaultError` never holds a value).

The audit log is paged by proxy/audit_pages.py, which reads the files backwards in fixed blocks
and keeps one page: a request costs a block and a page of memory however long the log is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from core.config import VaultConfig
from dashboard.backend import AuditQuery, AuditRow, AuditView, SecretForm, SecretView, VaultView
from gateway.approvals import REFUSE_USER
from gateway.running import RunningGateway
from proxy import secret_ops
from proxy.audit_pages import KINDS, AuditFilter, page, parse_status
from proxy.process import VaultUnavailable
from proxy.secrets import SecretStore, VaultError

log = logging.getLogger(__name__)

PAGE = 50
RELOAD_S = 10.0


def _store(gw: RunningGateway) -> SecretStore:
    return SecretStore(gw.config_dir)


def policy_settings(vault: VaultConfig) -> tuple[list[tuple[str, str]], list[str]]:
    """[vault] settings as (key, value) lines and each [[vault.policy]] entry as one line."""
    settings: list[tuple[str, str]] = [("unscoped", vault.unscoped)]
    egress = vault.egress or {}
    if not egress:
        settings.append(("egress", "every host (no [vault] egress entry)"))
    for group, hosts in sorted(egress.items()):
        settings.append((f"egress.{group}", ", ".join(hosts) or "(no host)"))
    rate = vault.rate_limit
    settings.append(("rate_limit.per_group_per_minute", str(rate.per_group_per_minute or "off")))
    settings.append(("rate_limit.per_host_per_minute", str(rate.per_host_per_minute or "off")))
    settings.append(("max_request_bytes", f"{vault.max_request_bytes:,}"))
    settings.append(
        ("max_response_bytes", f"{vault.max_response_bytes:,}" if vault.max_response_bytes else "unlimited")
    )
    settings.append(("max_connections_per_group", str(vault.max_connections_per_group)))
    settings.append(("idle_timeout_s", f"{vault.idle_timeout_s:g}"))
    settings.append(("allow_private_upstreams", ", ".join(vault.allow_private_upstreams) or "none"))
    settings.append(("approval.timeout_s", f"{vault.approval.timeout_s:g}"))
    settings.append(("approval.allow_for_minutes", f"{vault.approval.allow_for_minutes:g}"))
    policies = []
    for p in vault.policy:
        line = f"{p.host}{p.path} [{','.join(p.methods) or 'any'}] groups {','.join(p.groups) or '*'}"
        line += " · owner approves" if p.approve else " · no approval"
        if p.body is not None:
            line += f" · when {p.body.describe()}"
        policies.append(line)
    return settings, policies


async def vault_view(gw: RunningGateway) -> VaultView:
    error = None
    secrets: list[SecretView] = []
    try:
        infos = await asyncio.to_thread(_store(gw).list)
    except VaultError as e:
        error = e.message
    else:
        secrets = [
            SecretView(
                i.name,
                [r.describe() for r in i.effective_rules],
                list(i.groups),
                i.created_at or "-",
                i.last_used or "never",
            )
            for i in infos
        ]
    settings, policies = policy_settings(gw.config.vault)
    return VaultView(secrets, settings, policies, error)


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _row(e: dict[str, Any]) -> AuditRow:
    host = _cell(e.get("host"))
    if e.get("port") not in (None, 80, 443):
        host = f"{host}:{e.get('port')}"
    ts = _cell(e.get("ts")).replace("+00:00", "Z")
    return AuditRow(
        ts,
        _cell(e.get("group")),
        _cell(e.get("method")),
        host,
        _cell(e.get("path"))[:200],
        _cell(e.get("status")),
        _cell(e.get("ms")),
        _cell(e.get("secret")),
        _cell(e.get("refusal"))[:200],
        _cell(e.get("approval"))[:200],
        _cell(e.get("spend"))[:200],
    )


async def audit_view(gw: RunningGateway, q: AuditQuery) -> AuditView:
    try:
        status = parse_status(q.status)
    except ValueError as e:
        return AuditView([], 0, PAGE, False, str(e))
    kind = next((k for k in KINDS if k == q.kind), None)
    if kind is None:
        return AuditView([], 0, PAGE, False, "kind: expected refused, leak, approval or unmetered")
    flt = AuditFilter(q.group.strip()[:64], q.host.strip()[:253], status, kind)
    found = await asyncio.to_thread(page, gw.data_dir / "vault", flt, q.offset, PAGE)
    note = "older entries not searched (scan limit reached)" if found.scan_limited else None
    return AuditView([_row(e) for e in found.entries], found.offset, found.limit, found.has_more, note)


async def _reload(gw: RunningGateway) -> str:
    """What the CLI's `reload_running_vault` does, from inside the gateway that runs the vault."""
    with contextlib.suppress(VaultUnavailable, OSError, TimeoutError):
        await asyncio.wait_for(gw.vault.reload_secrets(), RELOAD_S)
        return "; the running vault reloaded its secrets"
    log.warning("dashboard: the vault did not confirm reloading its secrets")
    return "; the vault did not confirm the reload (it re-reads them when it restarts)"


async def _change(gw: RunningGateway, user: str, op: Callable[[SecretStore], str]) -> str:
    """Run one secret_ops call as admin `user` (off the event loop), then reload the vault."""
    if not gw.approvals.is_admin(user):
        return REFUSE_USER
    try:
        done = await asyncio.to_thread(op, _store(gw))
    except VaultError as e:
        return e.message
    log.info("dashboard: %s: %s", user, done)  # names and rules only, like the CLI's output
    return done + await _reload(gw)


async def add(gw: RunningGateway, form: SecretForm, value: str, user: str) -> str:
    spec = secret_ops.NewSecret(
        name=form.name.strip(),
        host=form.host.strip() or None,
        path=form.path.strip() or "/*",
        methods=tuple(m.strip().upper() for m in form.methods if m.strip()),
        action=form.action.strip() or None,
        header=form.header.strip() or None,
        fmt=form.fmt or None,
        query_param=form.query_param.strip() or None,
        preset=form.preset.strip() or None,
        groups=form.groups.strip() or None,
        replace=form.replace,
        approve=form.approve,
    )
    folders = [g.folder for g in gw.registry.all()]
    base_url = gw.config.model.base_url

    def op(store: SecretStore) -> str:
        return secret_ops.add_secret(store, spec, value, base_url, folders).summary

    return await _change(gw, user, op)


async def rotate(gw: RunningGateway, name: str, value: str, user: str) -> str:
    def op(store: SecretStore) -> str:
        secret_ops.rotate_secret(store, name, value)
        return f"rotated secret {name}"

    return await _change(gw, user, op)


async def scope(gw: RunningGateway, name: str, groups: str, user: str) -> str:
    def op(store: SecretStore) -> str:
        info = secret_ops.scope_secret(store, name, groups)
        return f"secret {info.name}: groups {', '.join(info.groups)}"

    return await _change(gw, user, op)


async def remove(gw: RunningGateway, name: str, user: str) -> str:
    def op(store: SecretStore) -> str:
        secret_ops.remove_secret(store, name)
        return f"removed secret {name}"

    return await _change(gw, user, op)
