"""Owner approval of HTTP requests: the pure parts (invariant 14).

Body conditions (bounded, type-strict, fail-safe), policy entries, what a request demands,
the prompt's body summary (redacted, control characters neutralised), the allowance clock,
the rule's `approve` field, the config's checks, and the "Allow for N minutes" button in the
approvals machinery (real SQLite, capture channels, a hand-driven clock). The vault process
and the whole loop are tests/vault/test_vault_holds_e2e.py and
tests/integration/test_http_approvals_telegram.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import ConfigError, parse
from core.http_approval import MAX_DEPTH, MAX_EVAL_BYTES, BodyCondition, VaultPolicyEntry
from gateway.approvals import NO_ALLOWANCE
from gateway.http_approvals import allow_label
from gateway.preflight import approval_policy_findings
from proxy.holds import Allowances, demand_for, neutralise, policy_entries, refusal_json, summarize_body
from proxy.rules import Rule, RuleError, make_rule
from tests.fakes.clock import FakeClock
from tests.unit.test_approvals import ADMIN, MAIN, T0, World, make_world


def cond(**kw: object) -> BodyCondition:
    return BodyCondition.model_validate(kw)


def test_substring_condition_looks_at_the_raw_body() -> None:
    c = cond(contains="DROP TABLE")
    assert c.met(b"sql=DROP TABLE users") and not c.met(b"sql=SELECT 1")


def test_pointer_equals_is_type_strict() -> None:
    assert cond(pointer="/to", equals="bob").met(b'{"to": "bob"}')
    assert not cond(pointer="/to", equals="bob").met(b'{"to": "bobby"}')
    assert cond(pointer="/n", equals=1).met(b'{"n": 1.0}')
    assert not cond(pointer="/n", equals=1).met(b'{"n": "1"}')
    assert not cond(pointer="/n", equals=1).met(b'{"n": true}')
    assert not cond(pointer="/flag", equals=True).met(b'{"flag": 1}')
    assert cond(pointer="/a~1b/0/c~0d", equals="x").met(b'{"a/b": [{"c~d": "x"}]}')
    assert not cond(pointer="/items/01", equals="x").met(b'{"items": ["a", "x"]}')  # no leading zeros


def test_pointer_contains_in_a_string_or_an_array() -> None:
    c = cond(pointer="/tags", contains="prod")
    assert c.met(b'{"tags": ["dev", "prod"]}') and not c.met(b'{"tags": ["production"]}')
    assert cond(pointer="/msg", contains="prod").met(b'{"msg": "to production"}')
    assert not c.met(b'{"tags": {"prod": 1}}')


def test_an_absent_value_is_not_met_but_an_unreadable_body_is() -> None:
    c = cond(pointer="/to", equals="mallory")
    assert not c.met(b'{"from": "mallory"}')
    assert c.met(b"to=mallory")  # not JSON: the owner decides
    assert c.met(b"\xff\xfe{}")  # not UTF-8
    assert c.met(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))  # too deep to parse
    big = b'{"to": "bob", "pad": "' + b"x" * MAX_EVAL_BYTES + b'"}'
    assert c.met(big)  # larger than what is evaluated
    assert cond(contains="never there").met(b"y" * (MAX_EVAL_BYTES + 1))


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"pointer": "/a"},
        {"pointer": "/a", "equals": "x", "contains": "y"},
        {"equals": "x"},
        {"pointer": "a", "equals": "x"},
        {"contains": ""},
        {"contains": "x" * 300},
        {"pointer": "/a", "equals": [1]},
        {"contains": "x", "regex": ".*"},
    ],
)
def test_invalid_conditions_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BodyCondition.model_validate(bad)


def test_policy_entries_validate_hosts_and_paths_naming_the_entry() -> None:
    good = VaultPolicyEntry(host="api.example.com", path="/pay", methods=["post"], approve=True)
    [entry] = policy_entries([good])
    assert entry.rule.methods == ("POST",) and entry.applies("team", "POST", "api.example.com", 443, "/pay")
    assert not entry.applies("team", "GET", "api.example.com", 443, "/pay")
    with pytest.raises(RuleError, match=r"entry 2: invalid path pattern"):
        policy_entries([good, VaultPolicyEntry(host="api.example.com", path="pay")])
    with pytest.raises(RuleError, match=r"entry 1: invalid host pattern"):
        policy_entries([VaultPolicyEntry(host="*.com")])


def test_config_checks_the_policy_and_the_hold_timeout(tmp_path: Path) -> None:
    cfg = parse(
        "[vault.approval]\ntimeout_s = 30\nallow_for_minutes = 0\n"
        '[[vault.policy]]\nhost = "api.x.com"\napprove = true\ngroups = ["team"]\n'
        'body = { pointer = "/amount", equals = 100 }\n',
        tmp_path / "c.toml",
    )
    [entry] = cfg.vault.policy
    assert entry.body is not None and entry.body.equals == 100 and cfg.vault.approval.allow_for_minutes == 0
    short = parse("[vault]\nidle_timeout_s = 200\n[vault.approval]\ntimeout_s = 200\n", tmp_path / "c.toml")
    assert short.vault.hold_timeout_s == 180  # the relay (idle_timeout_s) never cuts a hold first
    assert cfg.vault.hold_timeout_s == 30
    [finding] = approval_policy_findings(short)
    assert finding.level == "warning" and "held only 180s" in finding.what
    with pytest.raises(ConfigError, match="methods"):
        parse('[[vault.policy]]\nhost = "x.com"\nmethods = ["PO ST"]\n', tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="group"):
        parse('[[vault.policy]]\nhost = "x.com"\ngroups = ["../etc"]\n', tmp_path / "c.toml")


def test_demand_comes_from_the_injection_rule_and_matching_entries() -> None:
    rule = make_rule("api.x.com", "/admin/*", approve=True)
    plain = make_rule("api.x.com", "/admin/*")
    entries = policy_entries(
        [
            VaultPolicyEntry(host="api.x.com", path="/pay", approve=True, body=cond(contains="mallory")),
            VaultPolicyEntry(host="api.x.com", path="/pay", groups=["other"], approve=True),
            VaultPolicyEntry(host="api.x.com", path="/*", approve=False),  # switched off
        ]
    )
    d = demand_for(("tok", rule), entries, "team", "GET", "api.x.com", 443, "/admin/x")
    assert d is not None and d.key.startswith("secret tok: ") and d.met(b"")
    assert demand_for(("tok", plain), entries, "team", "GET", "api.x.com", 443, "/admin/x") is None
    d = demand_for(None, entries, "team", "POST", "api.x.com", 443, "/pay")
    assert d is not None and "#1" in d.key and "#2" not in d.key
    assert d.met(b'{"to": "mallory"}') and not d.met(b'{"to": "bob"}')


def test_body_summary_is_bounded_redacted_and_inert() -> None:
    body = (
        b'{"note": "\x1b[31mred\x07 \xe2\x80\xaeevil", "k": "sk-ant-'
        + b"A" * 30
        + b'", "v": "stored-value-123"}'
    )
    text = summarize_body(body, ["stored-value-123"])
    assert "\x1b" not in text and "\\x1b" in text and "\\x07" in text and "\\u202e" in text
    assert "sk-ant-" not in text and "[redacted: Anthropic API key]" in text
    assert "stored-value-123" not in text and "[redacted: stored secret]" in text
    long = summarize_body(b"z" * 10_000, [])
    assert long.startswith("z" * 600) and long.endswith("… (10000 bytes)") and len(long) < 700
    assert neutralise("line\nnext\ttab\x00") == "line\nnext\ttab\\x00"


def test_refusal_body_is_json_the_agent_can_relay() -> None:
    body = json.loads(refusal_json("the owner denied it", "POST", "api.x.com", "/pay"))
    assert body["error"] == "approval_required" and "the owner denied it" in body["message"]
    assert body["request"] == "POST api.x.com/pay"


def test_allowance_ends_at_its_deadline_and_is_per_group_and_rule() -> None:
    now = [100.0]
    a = Allowances(lambda: now[0])
    a.grant("team", "rule-1", 180)
    assert a.active("team", "rule-1")
    assert not a.active("team", "rule-2") and not a.active("other", "rule-1")
    now[0] = 279.9
    assert a.active("team", "rule-1")
    now[0] = 280.0
    assert not a.active("team", "rule-1")
    a.grant("team", "rule-1", 0)  # zero grants nothing
    assert not a.active("team", "rule-1")


def test_rule_approve_round_trips_and_is_shown() -> None:
    rule = make_rule("api.x.com", "/deploy/*", ["POST"], approve=True)
    assert rule.to_dict()["approve"] is True and Rule.from_dict(rule.to_dict()) == rule
    assert "approve" not in make_rule("api.x.com").to_dict()
    assert rule.describe().endswith("(owner approves)")
    with pytest.raises(RuleError, match="approve"):
        Rule.from_dict({"host": "api.x.com", "approve": "yes"})


def test_allow_label() -> None:
    assert allow_label(10) == "Allow for 10 min" and allow_label(0.05) == "Allow for 3 s"
    assert allow_label(0) is None


@pytest.fixture
async def w(tmp_path: Path):  # type: ignore[no-untyped-def]
    world = await make_world(tmp_path / "db.sqlite", FakeClock(T0))
    yield world
    await world.approvals.stop()
    await world.store.close()


async def test_allow_button_approves_once_and_tells_the_requester(w: World) -> None:
    before = len(w.tg.prompts)
    task = asyncio.create_task(
        w.approvals.request_approval(
            "HTTP POST x", "d", "team", 600, approval_id="abc", allow_label="Allow for 10 min"
        )
    )
    await w.tg.wait_until(lambda: len(w.tg.prompts) > before, 5)
    assert w.tg.prompts[-1][1].allow_label == "Allow for 10 min"
    assert await w.tg.press("abc", "allow", ADMIN, MAIN) == "Approved (allow for 10 min): HTTP POST x"
    assert await asyncio.wait_for(task, 5) == "approved"
    assert w.approvals.allowance_taken("abc") and not w.approvals.allowance_taken("abc")
    [(_, _, _, outcome)] = w.tg.outcomes
    assert outcome.state == "approved" and outcome.note == "allow for 10 min"
    assert (await w.tg.press("abc", "allow", ADMIN, MAIN)).startswith("already decided: approved")


async def test_allow_button_on_a_prompt_without_it_decides_nothing(w: World) -> None:
    task, approval_id = await w.ask()
    assert await w.tg.press(approval_id, "allow", ADMIN, MAIN) == NO_ALLOWANCE
    assert await w.state(approval_id) == "pending" and not task.done()
    assert await w.tg.press(approval_id, "approve", ADMIN, MAIN)
    assert await task == "approved" and not w.approvals.allowance_taken(approval_id)


async def test_void_names_who_withdrew_it(w: World) -> None:
    task, approval_id = await w.ask()
    assert await w.approvals.void(approval_id, by="the vault (the requester hung up)")
    assert await task == "denied"
    [(_, _, _, outcome)] = w.tg.outcomes
    assert outcome.decided_by == "the vault (the requester hung up)"


async def test_a_bad_policy_entry_stops_the_start_before_any_side_effect(tmp_path: Path) -> None:
    from gateway.app import Gateway, StartupError

    cfg = parse('[[vault.policy]]\nhost = "api.x.com"\npath = "pay/*"\napprove = true\n', tmp_path / "c.toml")
    [finding] = approval_policy_findings(cfg)
    assert finding.level == "error" and "entry 1: invalid path pattern 'pay/*'" in finding.what
    fine = parse('[[vault.policy]]\nhost = "api.x.com"\n', tmp_path / "c.toml")
    assert approval_policy_findings(fine) == []
    gw = Gateway(cfg, tmp_path / "config", tmp_path / "data")
    with pytest.raises(StartupError, match=r"\[\[vault.policy\]\] entry 1"):
        await gw.start()
    assert not (tmp_path / "data").exists()


async def test_a_group_may_cause_only_so_many_prompts_a_minute(tmp_path: Path) -> None:
    from proxy.holds import Demand, Holder

    now = [1000.0]
    holder = Holder(tmp_path / "no-gateway.sock", clock=lambda: now[0])  # nobody listens: 403
    holder.configure(timeout_s=5, max_held_per_group=4, max_prompts_per_minute=3)
    demand = Demand(key="k", label="k", conditions=(None,))

    async def ask(group: str = "team") -> tuple[int, str]:
        verdict = await holder.decide(group, demand, {}, lambda: False)
        assert not verdict.forward
        return verdict.status, verdict.outcome

    for _ in range(3):
        assert await ask() == (403, "refused: gateway unavailable")
    assert await ask() == (429, "refused: too many prompts")
    assert await ask("other") == (403, "refused: gateway unavailable")  # per group
    now[0] += 60
    assert await ask() == (403, "refused: gateway unavailable")
    holder.allowances.grant("team", "k", 30)  # an allowance asks nobody: not counted, not capped
    for _ in range(5):
        assert (await holder.decide("team", demand, {}, lambda: False)).forward
