"""NEAR wallet acceptance, end to end through Telegram (invariants 1, 5 and 6).

A real Gateway (Docker sandbox with the real agent runtime, vault process, SQLite) whose main
chat is a Telegram supergroup on the fake Bot API, a wallet key generated into its config dir,
and a NEAR JSON-RPC node on loopback (`FakeNearRpc`, which checks signatures itself). The
scripted model makes the TEAM group's agent call `near_transfer` / `near_sign_message`; the
owner decides with the buttons in the MAIN chat; what reaches the node, the chats and the
agent is asserted — and, at the end, that the private key appears nowhere it must not.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.approvals import REFUSE_USER
from gateway.wallet import nep413
from gateway.wallet.keystore import KEYS_FILE, KeyStore
from gateway.wallet.policy import utc_day
from gateway.wallet.transactions import SignedTransaction, Transfer
from groups.sandbox.docker import LABEL_GROUP, LABEL_INSTANCE
from tests.integration.wallet_support import (
    ADMIN,
    KEY_NAME,
    MAIN,
    OWNER_ACCOUNT,
    RECEIVER,
    STRANGER,
    TEAM,
    YOCTO,
    LeakReport,
    SecretForms,
    WalletEnv,
    container_tar_stream,
    container_users,
    log_records_text,
    proc_dump,
    wallet_gateway,
)

AGENT_TIMEOUT = 180  # first turn includes a cold container start


@pytest.fixture
async def env(dirs, model_server, sandbox_image, docker_client, caplog) -> AsyncIterator[WalletEnv]:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)  # every logger, every level: the leak scan reads all of it
    async with wallet_gateway(dirs, model_server, sandbox_image) as wallet_env:
        yield wallet_env


@pytest.fixture
async def short_env(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[WalletEnv]:  # type: ignore[no-untyped-def]
    async with wallet_gateway(dirs, model_server, sandbox_image, approval_timeout_s=2) as wallet_env:
        yield wallet_env


def assert_signed_transfer(env: WalletEnv, signed: SignedTransaction, amount_yocto: int) -> None:
    """The node got what the owner saw: our key, our account, bob, the exact amount, a valid signature."""
    tx = signed.transaction
    assert tx.signer_id == OWNER_ACCOUNT
    assert tx.public_key == env.key.public_key
    assert tx.receiver_id == RECEIVER
    assert tx.actions == (Transfer(amount_yocto),)
    # Checked with `cryptography`, not with our own signing code.
    digest = hashlib.sha256(tx.to_borsh()).digest()
    Ed25519PublicKey.from_public_bytes(env.key.public_key.data).verify(signed.signature, digest)


async def approve_transfer(env: WalletEnv, amount: str = "25") -> tuple[str, str]:
    """Ask for a transfer from the team chat and approve it as the admin; returns (hash, approval id)."""
    before, submitted = len(env.main_prompts()), len(env.near.submitted)
    env.say_in_team(f"@Andy send {amount} NEAR to {RECEIVER}")
    prompt, approval_id, _ = await env.prompt(before, AGENT_TIMEOUT)
    assert (await env.click(prompt, f"ap:{approval_id}:a", ADMIN)).startswith("Approved: NEAR request #")
    assert await asyncio.to_thread(env.near.wait_for_submissions, submitted + 1, 30)
    tx_hash = env.near.submitted[-1].hash
    await env.text_in(TEAM, tx_hash)
    return tx_hash, approval_id


async def test_owner_approves_in_main_chat_and_the_agent_reports_the_hash(env: WalletEnv) -> None:
    env.say_in_team(f"@Andy send 25 NEAR to {RECEIVER}")
    prompt, approval_id, text = await env.prompt(0, AGENT_TIMEOUT)

    # The prompt in the MAIN chat says what will be signed, for whom and why it asks.
    assert prompt["chat"]["id"] == MAIN
    assert [b["text"] for b in prompt["reply_markup"]["inline_keyboard"][0]] == ["✅ Approve", "❌ Deny"]
    assert re.search(rf"NEAR request #\d+ from team: 25 NEAR → {RECEIVER}", text), text
    assert "Group: team" in text
    assert f"Key: {KEY_NAME} — signs as {OWNER_ACCOUNT} (testnet)" in text
    assert f"Receiver: {RECEIVER}" in text
    assert f"Transfer 25 NEAR to {RECEIVER}" in text  # the action
    assert "Total: 25 NEAR" in text
    assert "Today's spend: 0 of 100 NEAR (UTC day)" in text
    assert "exceeds the auto-approve limit 1 NEAR" in text  # the reason
    assert re.search(r"Expires at \d\d:\d\d UTC", text), text
    assert f"/approve {approval_id}" in text

    # A stranger in the main chat cannot approve; nothing is signed or sent.
    assert await env.click(prompt, f"ap:{approval_id}:a", STRANGER) == REFUSE_USER
    await asyncio.sleep(0.5)
    assert env.near.received == [] and env.near.submitted == []
    record = await env.gw.store.approval(approval_id)
    assert record is not None and record.state == "pending"

    # The admin approves: exactly one signed transaction reaches the node.
    toast = await env.click(prompt, f"ap:{approval_id}:a", ADMIN)
    assert re.fullmatch(rf"Approved: NEAR request #\d+ from team: 25 NEAR → {RECEIVER}", toast), toast
    assert await asyncio.to_thread(env.near.wait_for_submissions, 1, 30)
    [signed] = env.near.submitted
    assert_signed_transfer(env, signed, 25 * YOCTO)
    tx_hash = signed.hash
    assert env.near.balance(RECEIVER) == 25 * YOCTO

    # The main chat is told the hash; the agent got it as its tool result and reports it in TEAM.
    await env.text_in(MAIN, f"Transaction: {tx_hash}")
    reply = await env.text_in(TEAM, tx_hash, AGENT_TIMEOUT)
    assert reply.startswith("Done. Transaction hash:")
    assert any(tx_hash in r for r in env.script.tool_results)
    edited = await env.edited(prompt)
    assert "Approved by tg:4242" in edited

    # A double click is answered "already decided" and signs nothing more.
    assert (await env.click(prompt, f"ap:{approval_id}:a", ADMIN)).startswith("already decided: approved")
    await asyncio.sleep(0.5)
    assert len(env.near.submitted) == 1
    assert [r["hash"] for r in env.near.received] == [tx_hash]
    [call] = [c for c in env.wallet.calls if c.method == "near_transfer"]
    assert call.folder == "team" and call.result is not None and call.result["transaction_hash"] == tx_hash


async def test_owner_denies_and_the_agent_is_told(env: WalletEnv) -> None:
    env.say_in_team(f"@Andy send 25 NEAR to {RECEIVER}")
    prompt, approval_id, _ = await env.prompt(0, AGENT_TIMEOUT)
    toast = await env.click(prompt, f"ap:{approval_id}:d", ADMIN)
    assert toast.startswith("Denied: NEAR request #"), toast

    denial = "was not signed: the owner denied it"
    await env.model_saw(denial)  # the agent's next model request carries the tool error
    reply = await env.text_in(TEAM, denial, AGENT_TIMEOUT)
    assert reply.startswith("It did not go through:")
    edited = await env.edited(prompt)
    assert "Denied by tg:4242" in edited
    await asyncio.sleep(0.5)
    assert env.near.received == [] and env.near.submitted == []
    assert env.near.balance(RECEIVER) == 0
    assert (await env.click(prompt, f"ap:{approval_id}:a", ADMIN)).startswith("already decided: denied")
    await asyncio.sleep(0.5)
    assert env.near.received == []


async def test_unanswered_request_expires_and_nothing_is_signed(short_env: WalletEnv) -> None:
    env = short_env
    env.say_in_team(f"@Andy send 25 NEAR to {RECEIVER}")
    prompt, approval_id, _ = await env.prompt(0, AGENT_TIMEOUT)

    expired = "was not signed: the approval request expired"
    await env.model_saw(expired, timeout=60)
    await env.text_in(TEAM, expired, AGENT_TIMEOUT)
    edited = await env.edited(prompt)
    assert re.search(r"Expired at .* \(denied\)", edited), edited
    # A late click cannot revive it.
    assert (await env.click(prompt, f"ap:{approval_id}:a", ADMIN)).startswith("already decided: expired")
    await asyncio.sleep(0.5)
    assert env.near.received == [] and env.near.submitted == []


async def test_small_transfer_is_signed_without_a_prompt(env: WalletEnv) -> None:
    env.say_in_team(f"@Andy send 0.5 NEAR to {RECEIVER}")
    assert await asyncio.to_thread(env.near.wait_for_submissions, 1, AGENT_TIMEOUT)
    [signed] = env.near.submitted
    assert_signed_transfer(env, signed, YOCTO // 2)
    await env.text_in(TEAM, signed.hash, AGENT_TIMEOUT)
    assert env.main_prompts() == []
    assert not [t for t in env.texts_in(MAIN) if "NEAR request" in t]
    [call] = [c for c in env.wallet.calls if c.method == "near_transfer"]
    assert call.result is not None and call.result["approved_by"] == "policy (auto-approved)"


async def test_private_key_appears_nowhere_but_encrypted(
    env: WalletEnv,
    docker_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Invariants 1 and 5 after a full run: approved transfer, auto transfer, denied transfer, NEP-413."""
    # 1. Approved transfer, and the agent reports the hash.
    tx_hash, _ = await approve_transfer(env)
    # 2. An auto-approved transfer.
    env.say_in_team(f"@Andy send 0.25 NEAR to {RECEIVER}")
    assert await asyncio.to_thread(env.near.wait_for_submissions, 2, AGENT_TIMEOUT)
    await env.text_in(TEAM, env.near.submitted[1].hash, AGENT_TIMEOUT)
    # 3. A denied transfer (an error path: its text reaches the agent and the logs).
    before = len(env.main_prompts())
    env.say_in_team(f"@Andy send 30 NEAR to {RECEIVER}")
    prompt, approval_id, text = await env.prompt(before, AGENT_TIMEOUT)
    assert "Today's spend: 25.25 of 100 NEAR (UTC day)" in text  # approved + auto-approved so far
    assert (await env.click(prompt, f"ap:{approval_id}:d", ADMIN)).startswith("Denied:")
    await env.text_in(TEAM, "the owner denied it", AGENT_TIMEOUT)
    # 4. A NEP-413 message signature, approved.
    before = len(env.main_prompts())
    env.say_in_team("@Andy sign the message login-42 for app.testnet")
    prompt, approval_id, text = await env.prompt(before, AGENT_TIMEOUT)
    assert "sign a message for app.testnet" in text
    assert (await env.click(prompt, f"ap:{approval_id}:a", ADMIN)).startswith("Approved:")
    reply = await env.text_in(TEAM, "Signed. Signature: ", AGENT_TIMEOUT)
    [sign] = [c for c in env.wallet.calls if c.method == "near_sign_message"]
    assert sign.result is not None and reply == f"Signed. Signature: {sign.result['signature']}"
    signed_payload = nep413.payload_hash("login-42", base64.b64decode(sign.result["nonce"]), "app.testnet")
    public = Ed25519PublicKey.from_public_bytes(env.key.public_key.data)
    public.verify(base64.b64decode(sign.result["signature"]), signed_payload)
    assert len(env.near.submitted) == 2
    spent = await env.gw.store.wallet_spent(utc_day(time.time()))
    assert spent == 25 * YOCTO + YOCTO // 4  # the denial spent nothing

    with KeyStore(env.config_dir).signer(KEY_NAME) as pair:
        forms = SecretForms.of(pair.export_secret())
    leaks = LeakReport(forms)
    # The scanner itself works (a positive control), including raw bytes inside other bytes.
    assert forms.find(b"x" + forms.needles["seed raw bytes"] + b"y") == ["seed raw bytes"]
    assert "secret string" in forms.find(json.dumps({"k": forms.needles["secret string"].decode()}))

    # The team container, while it runs: every process's env/argv, the whole filesystem, inspect.
    [container] = docker_client.containers.list(
        filters={"label": [f"{LABEL_INSTANCE}={env.gw.instance}", f"{LABEL_GROUP}=team"]}
    )
    users = container_users(container)
    assert len(users) == 2, users  # the agent does not run as root
    dumps = {user: proc_dump(container, user) for user in users}
    assert b"python3\x00-m\x00agent" in dumps[users[-1]]  # the agent's own /proc entries were readable
    for user in users:
        leaks.check(f"container /proc/*/environ, /proc/*/cmdline, env (as {user})", dumps[user])
        where = f"container filesystem (tar of / as {user})"
        size = await asyncio.to_thread(leaks.check_stream, where, container_tar_stream(container, user))
        assert size > 10_000_000, f"{where} looks truncated ({size} bytes)"
    leaks.check("docker inspect", json.dumps(docker_client.api.inspect_container(container.id)))
    leaks.check("container logs", container.logs(stdout=True, stderr=True))

    # Everything the agent sent to the model (its prompts, tool calls and tool results).
    leaks.check("model requests", json.dumps([(r.path, r.headers, r.body) for r in env.model.requests]))
    # Every Telegram call the gateway made: sends, edits, toasts.
    leaks.check("telegram calls", json.dumps(env.api.calls, default=str))
    leaks.check("telegram messages", json.dumps(list(env.api.messages.values()), default=str))
    # Every wallet IPC response and error, as sent down the agent's socket.
    assert {c.method for c in env.wallet.calls} == {"near_transfer", "near_sign_message"}
    leaks.check("wallet IPC responses", json.dumps([c.__dict__ for c in env.wallet.calls], default=str))
    leaks.check("tool results seen by the agent", "\n".join(env.script.tool_results))

    await env.stop()  # flush the database and the logs before reading the files

    # Logs (every logger at DEBUG) and every exception text they carried.
    assert caplog.records, "nothing was logged"
    leaks.check("captured log text", caplog.text)
    leaks.check("captured log records", log_records_text(caplog.records))
    # Data dir: SQLite database (+WAL), group folders with the agent's history, vault and gateway logs.
    history = env.data_dir / "groups" / "team" / ".clawgate" / "history.json"
    assert tx_hash in history.read_text()  # the IPC responses the agent kept
    assert leaks.check_tree(env.data_dir) >= 3
    assert any(p.endswith(".log") for p in leaks.scanned), leaks.scanned
    # Config dir: only wallet-keys.json may hold the key, and only encrypted.
    keys_file = env.config_dir / KEYS_FILE
    assert str(env.key.public_key) in keys_file.read_text()
    leaks.check_tree(env.config_dir)
    assert str(keys_file) in leaks.scanned

    assert leaks.findings == [], f"private key leaked: {leaks.findings}"
