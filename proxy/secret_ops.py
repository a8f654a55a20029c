"""Adding, rotating, scoping and removing a secret: the ONE code path of the CLI and the dashboard.

`clawgate vault add|rotate|scope|remove` (proxy/cli.py, proxy/cli_secrets.py) and the
dashboard's Vault page (gateway/dashboard_vault.py) both call these functions, so a secret added
from a browser is validated exactly like one added from a shell: the same presets, the same
rule checks (proxy/rules.py), the same store checks (proxy/secrets.py), the same default groups.
Every failure is a `VaultError` whose message names the bad field and never holds the value.

Nothing here reads argv, stdin, a click context or the gateway's database: the caller passes the
value, the model's base URL and the registered groups in, so both front ends can.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from proxy.rules import PRESETS, Rule, RuleError, host_matches, make_rule
from proxy.secrets import DEFAULT_GROUPS, SecretInfo, SecretStore, VaultError


@dataclass(frozen=True)
class NewSecret:
    """What `clawgate vault add` takes besides the value (its options, unparsed where the CLI's are)."""

    name: str
    host: str | None = None
    path: str = "/*"
    methods: tuple[str, ...] = ()
    action: str | None = None
    header: str | None = None
    fmt: str | None = None
    query_param: str | None = None
    preset: str | None = None
    groups: str | None = None  # a comma list, "*" = all; None = the default (`default_groups`)
    replace: bool = False
    approve: bool = False


@dataclass(frozen=True)
class Added:
    info: SecretInfo
    rule: Rule
    groups_note: str | None  # why these groups, when the default chose them

    @property
    def summary(self) -> str:
        """What the CLI prints and the page flashes: the name and rule, never the value."""
        scope = ", ".join(self.info.groups)
        if self.info.rules:
            return f"stored secret {self.info.name}: {self.rule.describe()} (groups {scope})"
        return (
            f"stored secret {self.info.name} for {self.info.host} (header {self.info.header}, groups {scope})"
        )


def parse_groups(groups: str) -> list[str]:
    return [g.strip() for g in groups.split(",")]


def build_rule(spec: NewSecret) -> Rule:
    """The rule `spec` describes (presets filled in), or VaultError naming the bad field."""
    host, action, header, fmt = spec.host, spec.action, spec.header, spec.fmt
    try:
        if spec.preset:
            if spec.preset not in PRESETS:
                raise RuleError(f"unknown preset {spec.preset!r}: use one of {', '.join(sorted(PRESETS))}")
            p_action, p_header, p_fmt, p_host = PRESETS[spec.preset]
            host = host or p_host
            action, header, fmt = action or p_action, header or p_header, fmt or p_fmt
        if not host:
            raise RuleError("--host is required (or a --preset with a default host)")
        methods = tuple(m for m in spec.methods if m)
        return make_rule(
            host, spec.path, methods, action or "set_header", header, fmt, spec.query_param, spec.approve
        )
    except RuleError as e:
        raise VaultError(str(e)) from None


def default_groups(rule: Rule, model_base_url: str | None, registered: list[str]) -> tuple[list[str], str]:
    """Who may use a new secret when no groups are given, and why (shown to the user).

    The model key is needed by every group that runs turns: scoped to main alone, a second
    group's model calls carry the placeholder and fail with 401 (issue 12). Other keys stay
    with main unless widened.
    """
    if model_base_url is None:
        return list(DEFAULT_GROUPS), "the default"
    parts = urlsplit(model_base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not host_matches(rule.host, (parts.hostname or "").lower(), port):
        return list(DEFAULT_GROUPS), "the default for keys other than the model's"
    folders = list(dict.fromkeys(["main", *registered]))
    return folders, "the model host's key: every registered group"


def add_secret(
    store: SecretStore, spec: NewSecret, value: str, model_base_url: str | None, registered: list[str]
) -> Added:
    """Validate `spec` and store `value` under it (`clawgate vault add`)."""
    rule = build_rule(spec)
    note = None
    if spec.groups is None:
        group_list, why = default_groups(rule, model_base_url, registered)
        note = f"groups: {','.join(group_list)} ({why}; choose with --groups)"
    else:
        group_list = parse_groups(spec.groups)
    legacy = rule.action == "set_header" and rule.path == "/*" and not rule.methods and not rule.approve
    if legacy:  # the v1 record form: host + header + format
        info = store.add(
            spec.name,
            value,
            rule.host,
            header=rule.header or "",
            fmt=rule.format,
            replace=spec.replace,
            groups=group_list,
        )
    else:
        info = store.add(spec.name, value, rules=[rule], replace=spec.replace, groups=group_list)
    return Added(info, rule, note)


def existing(store: SecretStore, name: str) -> SecretInfo:
    """NAME's metadata, or VaultError when there is no such secret."""
    info = store.get(name)
    if info is None:
        raise VaultError(f"no secret named {name!r}")
    return info


def rotate_secret(store: SecretStore, name: str, value: str) -> SecretInfo:
    """`clawgate vault rotate`: a new value, rules and groups kept."""
    existing(store, name)
    return store.rotate(name, value)


def scope_secret(store: SecretStore, name: str, groups: str) -> SecretInfo:
    """`clawgate vault scope`: which groups may use NAME."""
    existing(store, name)
    return store.set_groups(name, parse_groups(groups))


def remove_secret(store: SecretStore, name: str) -> None:
    """`clawgate vault remove`."""
    if not store.remove(name):
        raise VaultError(f"no secret named {name!r}")
