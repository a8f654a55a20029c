"""Injection rules (proxy/rules.py), policy primitives (proxy/policy.py), secret schema v2,
the CLI verbs show/rotate/add-with-rules, and scoped placeholders in agent_environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from mitmproxy.http import Headers

from core.config import Config, ConfigError, parse
from core.models import Group
from gateway.sandboxes import agent_environment
from proxy.cli import vault_cli
from proxy.policy import Policy, RateLimiter, SizeCap, SlidingWindow, model_host_of
from proxy.rules import (
    Edit,
    Rule,
    RuleError,
    host_matches,
    make_rule,
    model_key_usable,
    path_matches,
    plan,
    preset_rule,
    select,
    specificity,
)
from proxy.secrets import SecretInfo, SecretStore, VaultError

# --- host matching ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "port", "ok"),
    [
        ("api.example.com", "api.example.com", 443, True),
        ("api.example.com", "API.example.com.", 443, True),
        ("api.example.com", "x.api.example.com", 443, False),
        ("api.example.com", "example.com", 443, False),
        ("api.example.com:8443", "api.example.com", 8443, True),
        ("api.example.com:8443", "api.example.com", 443, False),
        ("*.example.com", "a.example.com", 443, True),
        ("*.example.com", "example.com", 443, False),  # never the apex
        ("*.example.com", "a.b.example.com", 443, False),  # exactly one label
        ("*.example.com", "evilexample.com", 443, False),
        ("*.example.com:80", "a.example.com", 80, True),
        ("*.example.com:80", "a.example.com", 443, False),
        ("127.0.0.1:8080", "127.0.0.1", 8080, True),
        ("[::1]:8080", "::1", 8080, True),
    ],
)
def test_host_matches(pattern: str, host: str, port: int, ok: bool) -> None:
    assert host_matches(pattern, host, port) is ok


@pytest.mark.parametrize(
    ("pattern", "path", "ok"),
    [
        ("/*", "/anything/at/all?x=1", True),
        ("/a/b", "/a/b", True),
        ("/a/b", "/a/b?q=1", True),
        ("/a/b", "/a/b/", False),
        ("/a/b", "/a/bc", False),
        ("/a/b", "/a", False),
        ("/a/*", "/a", True),
        ("/a/*", "/a/", True),
        ("/a/*", "/a/x", True),
        ("/a/*", "/a/x/y", True),
        ("/a/*", "/ab", False),
        ("/a/*", "/b/a", False),
        ("/repos/*/pulls", "/repos/me/pulls", True),
        ("/repos/*/pulls", "/repos//pulls", False),
        ("/repos/*/pulls", "/repos/me/x/pulls", False),
        ("/repos/*/pulls", "/repos/me/pulls/1", False),
        ("/repos/*/pulls/*", "/repos/me/pulls/1/files", True),
        ("/repos/*/pulls/*", "/repos/me/issues/1", False),
    ],
)
def test_path_matches(pattern: str, path: str, ok: bool) -> None:
    assert path_matches(pattern, path) is ok


def test_method_matching() -> None:
    from proxy.rules import rule_matches

    r = make_rule("h.example", methods=["get", "POST"])
    assert r.methods == ("GET", "POST")
    assert rule_matches(r, "get", "h.example", 443, "/")
    assert not rule_matches(r, "DELETE", "h.example", 443, "/")
    assert rule_matches(make_rule("h.example"), "DELETE", "h.example", 443, "/")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": "*.com"},
        {"host": "a.*.com"},
        {"host": "ex ample.com"},
        {"host": "example.com:0"},
        {"host": "example.com:²"},  # found by tests/fuzz: isdigit() but not int(); ValueError escaped
        {"host": "example.com:４４３"},  # fullwidth digits: a second spelling of port 443
        {"host": "example.com", "path": "a/b"},
        {"host": "example.com", "path": "/a*/b"},
        {"host": "example.com", "path": "/a//b"},
        {"host": "example.com", "path": "/a?x=1"},
        {"host": "example.com", "methods": ["G E T"]},
        {"host": "example.com", "action": "nope"},
        {"host": "example.com", "header": "bad header"},
        {"host": "example.com", "fmt": "no value"},
        {"host": "example.com", "fmt": "{value}{value}"},
        {"host": "example.com", "fmt": "{value} {other}"},
        {"host": "example.com", "action": "set_query"},
        {"host": "example.com", "action": "path_template", "fmt": "bot{value}"},
    ],
)
def test_invalid_rules(kwargs: dict) -> None:
    with pytest.raises(RuleError):
        make_rule(**kwargs)


def test_presets() -> None:
    assert preset_rule("anthropic").header == "x-api-key"
    assert preset_rule("anthropic").host == "api.anthropic.com"
    assert preset_rule("anthropic-oauth").format == "Bearer {value}"
    assert preset_rule("openai").header == "Authorization"
    gh = preset_rule("github")
    assert (gh.host, gh.header, gh.format) == ("api.github.com", "Authorization", "token {value}")
    with pytest.raises(RuleError, match="needs --host"):
        preset_rule("generic")
    assert preset_rule("generic", "x.example").format == "Bearer {value}"
    with pytest.raises(RuleError):
        preset_rule("nope")


# --- specificity ------------------------------------------------------------------------------


def test_most_specific_rule_wins() -> None:
    wild = make_rule("*.example.com")
    exact = make_rule("api.example.com")
    exact_port = make_rule("api.example.com:443")
    prefix = make_rule("api.example.com", "/v1/*")
    deeper = make_rule("api.example.com", "/v1/chat/*")
    exact_path = make_rule("api.example.com", "/v1/chat")
    with_method = make_rule("api.example.com", "/v1/chat", ["POST"])
    assert specificity(exact) > specificity(wild)
    assert specificity(exact_port) > specificity(exact)
    assert specificity(deeper) > specificity(prefix)
    assert specificity(exact_path) > specificity(deeper)  # same literal segments, exact beats prefix
    assert specificity(with_method) > specificity(exact_path)

    cands = [("a", [wild]), ("b", [exact]), ("c", [prefix]), ("d", [deeper]), ("e", [with_method])]
    assert select(cands, "POST", "api.example.com", 443, "/v1/chat")[0] == "e"
    assert select(cands, "GET", "api.example.com", 443, "/v1/chat")[0] == "d"
    assert select(cands, "GET", "api.example.com", 443, "/v1/models")[0] == "c"
    assert select(cands, "GET", "api.example.com", 443, "/other")[0] == "b"
    assert select(cands, "GET", "x.example.com", 443, "/v1/chat")[0] == "a"
    assert select(cands, "GET", "example.com", 443, "/") is None


def test_ties_go_to_first_name_then_first_rule() -> None:
    r1, r2 = make_rule("h.example", header="X-One"), make_rule("h.example", header="X-Two")
    assert select([("zeta", [r1]), ("alpha", [r2])], "GET", "h.example", 443, "/") == ("alpha", r2)
    assert select([("s", [r1, r2])], "GET", "h.example", 443, "/") == ("s", r1)


# --- actions ----------------------------------------------------------------------------------


def test_actions() -> None:
    hdrs = Headers(authorization="Bearer placeholder", cookie="c=1")
    assert plan(make_rule("h", action="set_header", header="X-Key", fmt="{value}"), "V", "/", hdrs) == Edit(
        set_headers={"X-Key": "V"}
    )
    gh = make_rule("h", header="Authorization", fmt="token {value}")
    assert plan(gh, "V", "/", hdrs).set_headers == {"Authorization": "token V"}
    rep = make_rule("h", action="replace_header", header="Authorization")
    assert plan(rep, "V", "/", hdrs).set_headers == {"Authorization": "Bearer V"}
    assert plan(rep, "V", "/", Headers()).empty  # only if the client sent it
    rm = make_rule("h", action="remove_header", header="Cookie")
    assert plan(rm, "V", "/", hdrs) == Edit(remove_headers=("Cookie",))
    assert plan(rm, "V", "/", Headers()).empty
    q = make_rule("h", action="set_query", param="key")
    assert plan(q, "V", "/", hdrs) == Edit(set_query={"key": "V"})
    tg = make_rule("h", action="path_template", fmt="/bot{value}")
    assert plan(tg, "123:ABC", "/botplaceholder/getMe?x=1", hdrs).path == "/bot123:ABC/getMe?x=1"
    assert plan(tg, "V", "/botplaceholder", hdrs).path == "/botV"
    assert plan(tg, "V", "/botplaceholderX/getMe", hdrs).empty
    assert plan(tg, "V", "/other/botplaceholder", hdrs).empty


def test_rule_dict_roundtrip_and_describe() -> None:
    r = make_rule("*.example.com:8443", "/a/*", ["post"], "set_query", fmt="k-{value}", param="token")
    assert Rule.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert "set_query token=k-{value}" in r.describe()


# --- secret store v2 --------------------------------------------------------------------------


def test_store_rules_groups_rotate_usage(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    tg = make_rule("api.telegram.org", action="path_template", fmt="/bot{value}")
    info = store.add("tg", "123:abc", rules=[tg], groups=["main", "team"])
    assert info.rules == (tg,) and info.groups == ("main", "team")
    assert store.get("tg") == info
    store.add("legacy", "v1", "api.example.com")
    assert store.get("legacy").groups == ("main",)
    assert store.get("legacy").effective_rules[0].host == "api.example.com"
    with pytest.raises(VaultError):
        store.add("bad", "v", rules=[tg], groups=["no spaces"])
    with pytest.raises(VaultError):
        store.add("bad", "v", rules=[tg], groups=[])
    old = json.loads(store.secrets_path.read_text())["secrets"][0]["ciphertext"]
    store.rotate("tg", "456:def")
    rec = json.loads(store.secrets_path.read_text())["secrets"][0]
    assert rec["ciphertext"] != old and rec["rules"][0]["action"] == "path_template"
    assert dict((i.name, v) for i, v in store.load_all())["tg"] == "456:def"
    with pytest.raises(VaultError, match="no secret"):
        store.rotate("nope", "x")
    store.record_usage({"tg": "2026-01-01T00:00:00+00:00"})
    assert store.get("tg").last_used == "2026-01-01T00:00:00+00:00"
    assert (tmp_path / "secrets-usage.json").stat().st_mode & 0o777 == 0o600


def test_v1_file_still_loads(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    store.add("a", "VAL", "api.example.com", header="x-api-key", fmt="{value}")
    doc = json.loads(store.secrets_path.read_text())
    doc["version"] = 1
    store.secrets_path.write_text(json.dumps(doc))
    [(info, value)] = store.load_all()
    assert value == "VAL" and info.allows("main") and not info.allows("team")
    assert info.effective_rules == (Rule("api.example.com", header="x-api-key", format="{value}"),)


def test_allows() -> None:
    everyone = SecretInfo("n", "h", "A", "{value}", "", groups=("*",))
    assert everyone.allows("anything") and not everyone.allows(None)


# --- policy primitives ------------------------------------------------------------------------


def test_egress_policy() -> None:
    p = Policy(model_host=model_host_of("https://api.anthropic.com"))
    assert p.egress_allowed("main", "anything.example", 443)
    assert p.egress_allowed("team", "api.anthropic.com", 443)
    assert not p.egress_allowed("team", "api.anthropic.com", 8443)
    assert not p.egress_allowed("team", "github.com", 443)
    p = Policy(egress={"main": ["api.github.com"], "team": ["*.github.com"], "default": ["pypi.org"]})
    assert not p.egress_allowed("main", "evil.example", 443)
    assert p.egress_allowed("team", "api.github.com", 443)
    assert not p.egress_allowed("team", "github.com", 443)
    assert p.egress_allowed("other", "pypi.org", 443)
    assert model_host_of("http://127.0.0.1:11434/v1") == ("127.0.0.1", 11434)


def test_sliding_window_and_rate_limiter() -> None:
    now = [0.0]
    w = SlidingWindow(2, window=60, clock=lambda: now[0])
    assert w.retry_after("k") is None and w.retry_after("k") is None
    assert w.retry_after("k") == 60
    now[0] = 59.5
    assert w.retry_after("k") == 1
    now[0] = 60.0
    assert w.retry_after("k") is None  # the first event left the window
    assert SlidingWindow(0).retry_after("k") is None
    rl = RateLimiter(per_group=3, per_host=1, clock=lambda: now[0])
    assert rl.check("g", "a.example") is None
    assert rl.check("g", "a.example")[0] == "per_host_per_minute"
    assert rl.check("g", "b.example") is None
    assert rl.check("h", "a.example") is None  # per (group, host)
    assert rl.check("g", "c.example")[0] == "per_group_per_minute"


def test_size_cap() -> None:
    meta: dict = {}
    cap = SizeCap(5, meta)
    assert cap(b"abc") == b"abc" and meta["clawgate.response_bytes"] == 3
    assert cap(b"defgh") == b"de" and cap(b"ij") == b""  # cut at the cap, never more
    assert "truncated" in meta["clawgate.refusal"]
    assert SizeCap(0)(b"x" * 100) == b"x" * 100


def test_vault_config_keys() -> None:
    cfg = parse(
        '[vault]\nunscoped = "refuse"\nmax_request_bytes = 10\n'
        '[vault.egress]\nteam = ["*.github.com"]\n[vault.rate_limit]\nper_group_per_minute = 5\n',
        Path("config.toml"),
    )
    assert cfg.vault.unscoped == "refuse" and cfg.vault.egress == {"team": ["*.github.com"]}
    assert cfg.vault.rate_limit.per_group_per_minute == 5
    with pytest.raises(ConfigError, match="unscoped"):
        parse('[vault]\nunscoped = "maybe"\n', Path("config.toml"))


# --- placeholders -----------------------------------------------------------------------------


def _group(folder: str) -> Group:
    return Group(folder, f"console:{folder}", folder, "@Andy", is_main=folder == "main")


def test_placeholder_only_for_groups_that_may_use_the_model_key() -> None:
    config = Config()
    key = SecretInfo("anthropic", "api.anthropic.com", "x-api-key", "{value}", "")
    assert model_key_usable([key], "main", config.model.base_url)
    assert not model_key_usable([key], "team", config.model.base_url)
    assert agent_environment(config, _group("main"), [key])["ANTHROPIC_API_KEY"] == "placeholder"
    assert "ANTHROPIC_API_KEY" not in agent_environment(config, _group("team"), [key])
    assert "ANTHROPIC_API_KEY" not in agent_environment(config, _group("main"), [])
    shared = SecretInfo("anthropic", "api.anthropic.com", "x-api-key", "{value}", "", groups=("*",))
    assert agent_environment(config, _group("team"), [shared])["ANTHROPIC_API_KEY"] == "placeholder"
    # no metadata given: unchanged behaviour
    assert agent_environment(config, _group("team"))["ANTHROPIC_API_KEY"] == "placeholder"


# --- CLI --------------------------------------------------------------------------------------


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLAWGATE_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("CLAWGATE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "cfg"


def test_cli_add_with_rules_show_rotate(cfg: Path) -> None:
    run = CliRunner().invoke
    r = run(
        vault_cli,
        ["add", "tg", "--host", "api.telegram.org", "--action", "path_template", "--format", "/bot{value}"],
        input="123:SECRET\n",
    )
    assert r.exit_code == 0, r.output
    r = run(vault_cli, ["add", "gh", "--preset", "github", "--path", "/repos/*", "--method", "GET",
                        "--groups", "main,team"], input="ghp_SECRET\n")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run(vault_cli, ["add", "q", "--host", "maps.example", "--action", "set_query"], input="k")
    assert r.exit_code != 0 and "query parameter" in r.output
    r = run(vault_cli, ["add", "g", "--preset", "generic"], input="k")
    assert r.exit_code != 0 and "--host" in r.output
    r = run(vault_cli, ["show", "gh"])
    assert r.exit_code == 0 and "SECRET" not in r.output
    assert "api.github.com/repos/* [GET] set_header Authorization: token {value}" in r.output
    assert "main, team" in r.output and "never" in r.output
    r = run(vault_cli, ["rotate", "gh"], input="ghp_NEW\n")
    assert r.exit_code == 0, r.output
    store = SecretStore(cfg)
    assert dict((i.name, v) for i, v in store.load_all())["gh"] == "ghp_NEW"
    assert store.get("gh").groups == ("main", "team")
    assert run(vault_cli, ["show", "nope"]).exit_code != 0
    assert run(vault_cli, ["rotate", "nope"], input="x").exit_code != 0


def test_cli_vault_test_sends_a_real_request(cfg: Path) -> None:
    from tests.vault.test_vault_policy_e2e import Upstream

    up = Upstream()
    try:
        hp = f"127.0.0.1:{up.port}"
        run = CliRunner().invoke
        r = run(
            vault_cli,
            ["add", "k", "--host", hp, "--path", "/v1/*", "--header", "X-K", "--format", "{value}"],
            input="KV",
        )
        assert r.exit_code == 0, r.output
        r = run(vault_cli, ["test", "k", "--scheme", "http", "--allow-private", hp])
        assert r.exit_code == 0, r.output
        assert "200 OK" in r.output and "KV" not in r.output
        assert up.last()["path"] == "/v1/" and up.last()["h"]["x-k"] == "KV"
        r = run(vault_cli, ["test", "k", "--scheme", "http"])  # loopback without --allow-private
        assert r.exit_code != 0 and "403" in r.output
    finally:
        up.close()
