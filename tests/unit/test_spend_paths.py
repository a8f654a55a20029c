"""proxy/spend_paths.py: which requests are metered, unmeterable, free or unknown, however a
hostile sandbox spells the path, and whether a Responses body asks for background mode; plus
the budget's verdict on each class (proxy/budget.py) and the README's list kept in step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from proxy.budget import MARKER, VaultBudgets
from proxy.spend_paths import (
    GEMINI_VERBS,
    MAX_CHECKED_BODY,
    OLLAMA,
    TABLE,
    background_answer,
    background_requested,
    classify,
    gemini_model,
    gemini_unreadable,
    normalize_path,
)

ROOT = Path(__file__).resolve().parents[2]


GEMINI = "generativelanguage.googleapis.com"
GEN = "/v1beta/models/gemini-2.5-flash"


@pytest.mark.parametrize(
    ("method", "path", "host", "kind", "label"),
    [
        # Gemini's native API: the call is the `:verb`, on any host, with any method
        ("POST", f"{GEN}:generateContent", GEMINI, "metered", "gemini"),
        ("POST", f"{GEN}:streamGenerateContent?alt=sse&key=x", "", "metered", "gemini"),
        ("POST", "/v1/models/gemini-2.0-flash:streamGenerateContent", "", "metered", "gemini"),
        ("POST", "/v1beta/tunedModels/mine-123:generateContent", "", "metered", "gemini"),
        ("GET", f"{GEN}:generateContent", "", "metered", "gemini"),  # a method override makes it a call
        # ... however the verb is spelled
        ("POST", f"{GEN}%3AgenerateContent", "", "metered", "gemini"),
        ("POST", f"{GEN}%253AstreamGenerateContent", "", "metered", "gemini"),  # double-encoded
        ("POST", "/V1BETA//Models/Gemini-2.5-Flash:GENERATECONTENT/", "", "metered", "gemini"),
        ("POST", "/v1beta/models/./x/../gemini-2.5-flash:generateContent", "", "metered", "gemini"),
        ("POST", "/v1beta/models/gemini-2.5-flash%3agenerateContent;x=1", "", "metered", "gemini"),
        ("POST", f"{GEN}:countTokens", GEMINI, "free", ""),
        ("POST", "/v1beta/batches/b1:cancel", GEMINI, "free", ""),
        ("POST", "/v1beta/files", GEMINI, "free", ""),
        ("POST", "/upload/v1beta/files?uploadType=resumable", GEMINI, "free", ""),
        ("POST", f"{GEN}:batchGenerateContent", "", "unmeterable", "Gemini batch creation"),
        (
            "POST",
            "/v1beta/models/gemini-embedding-001:asyncBatchEmbedContent",
            "",
            "unmeterable",
            "Gemini embedding batch creation",
        ),
        (
            "POST",
            "/v1beta/models/gemini-embedding-001:embedContent",
            "",
            "unmeterable",
            "Gemini embedContent",
        ),
        (
            "POST",
            "/v1beta/models/gemini-embedding-001:batchEmbedContents",
            "",
            "unmeterable",
            "Gemini batchEmbedContents",
        ),
        ("POST", "/v1beta/models/aqa:generateAnswer", "", "unmeterable", "Gemini generateAnswer"),
        (
            "POST",
            "/v1beta/models/imagen-4.0-generate-001:predict",
            "",
            "unmeterable",
            "Gemini predict (Imagen)",
        ),
        (
            "POST",
            "/v1beta/models/veo-3.0-generate-001:predictLongRunning",
            "",
            "unmeterable",
            "Gemini predictLongRunning (Veo, Imagen)",
        ),
        ("POST", "/v1beta/cachedContents", "", "unmeterable", "Gemini context cache creation"),
        (
            "PATCH",
            "/v1beta/cachedContents/abc?updateMask=ttl",
            "",
            "unmeterable",
            "Gemini context cache update",
        ),
        (
            "GET",
            "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent?key=k",
            "",
            "unmeterable",
            "Gemini Live API",
        ),
        (
            "GET",
            "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained",
            "",
            "unmeterable",
            "Gemini Live API",
        ),
        (
            "POST",
            "/google.ai.generativelanguage.v1beta.GenerativeService/GenerateContent",
            "",
            "unmeterable",
            "Gemini gRPC call",
        ),
        (
            "POST",
            "/$rpc/google.ai.generativelanguage.v1beta.GenerativeService/GenerateContent",
            "",
            "unmeterable",
            "Gemini gRPC call",
        ),
        # respelled unmeterable verbs: the stricter reading wins
        ("POST", f"{GEN}%3AbatchGenerateContent", "", "unmeterable", "Gemini batch creation"),
        ("POST", "/v1beta/models/imagen;x:predict", "", "unmeterable", "Gemini predict (Imagen)"),
        ("POST", f"{GEN}:countTokens:batchGenerateContent", "", "unmeterable", "Gemini batch creation"),
        ("POST", "/v1beta/%63achedContents", "", "unmeterable", "Gemini context cache creation"),
        ("GET", f"{GEN}:predict", "", "unmeterable", "Gemini predict (Imagen)"),
        # metered, with the query strings and spellings clients really send
        ("POST", "/v1/messages?beta=true", "", "metered", "anthropic"),
        ("POST", "/v1/chat/completions", "", "metered", "openai-chat"),
        ("POST", "/v1/responses/", "", "metered", "openai-responses"),
        ("POST", "/v1/completions", "", "metered", "openai-completions"),
        ("POST", "/v1/embeddings", "api.openai.com", "metered", "openai-embeddings"),
        ("post", "/V1/Embeddings#frag", "", "metered", "openai-embeddings"),
        # OpenAI-compatible APIs under their own prefixes (OpenRouter, Azure, Gemini, Groq, DeepSeek)
        ("POST", "/api/v1/chat/completions", "openrouter.ai", "metered", "openai-chat"),
        (
            "POST",
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            "",
            "metered",
            "openai-chat",
        ),
        ("POST", "/openai/deployments/emb/embeddings", "", "metered", "openai-embeddings"),
        ("POST", "/v1beta/openai/chat/completions", "", "metered", "openai-chat"),
        ("POST", "/openai/v1/responses", "api.groq.com", "metered", "openai-responses"),
        ("POST", "/chat/completions", "api.deepseek.com", "metered", "openai-chat"),
        ("POST", "/api/v1/completions", "", "metered", "openai-completions"),
        ("POST", "/API/V1//Chat/%43ompletions", "", "metered", "openai-chat"),
        # ... but not every REST path that ends like one
        ("POST", "/v1/surveys/1/responses", "", "other", ""),
        ("POST", "/api/v1/messages", "", "other", ""),
        ("POST", "/v2/chat/completions", "", "other", ""),
        ("GET", "/api/v1/chat/completions", "", "other", ""),
        # unmeterable, on any host
        ("POST", "/v1/messages/batches", "", "unmeterable", "Anthropic message batch creation"),
        ("POST", "/v1/batches", "127.0.0.1", "unmeterable", "OpenAI batch creation"),
        ("POST", "/v1/complete", "", "unmeterable", "Anthropic legacy Text Completions"),
        ("POST", "/v1/images/generations", "", "unmeterable", "OpenAI image generation"),
        ("POST", "/v1/images/edits", "", "unmeterable", "OpenAI image edit"),
        ("POST", "/v1/images/variations", "", "unmeterable", "OpenAI image variation"),
        ("POST", "/v1/audio/speech", "", "unmeterable", "OpenAI text-to-speech"),
        ("POST", "/v1/audio/transcriptions", "", "unmeterable", "OpenAI transcription"),
        ("POST", "/v1/audio/translations", "", "unmeterable", "OpenAI audio translation"),
        ("GET", "/v1/realtime?model=gpt-realtime", "", "unmeterable", "OpenAI Realtime"),
        ("POST", "/v1/realtime/client_secrets", "", "unmeterable", "OpenAI Realtime"),
        ("OPTIONS", "/v1/realtime/calls/x", "", "unmeterable", "OpenAI Realtime"),
        ("HEAD", "/v1/realtime", "", "unmeterable", "OpenAI Realtime"),
        ("POST", "/v1/fine_tuning/jobs", "", "unmeterable", "OpenAI fine-tuning job"),
        ("POST", "/v1/fine_tuning/jobs/ftjob-1/resume", "", "unmeterable", "OpenAI fine-tuning job resume"),
        ("POST", "/v1/threads/thread_1/runs", "", "unmeterable", "OpenAI Assistants run"),
        ("PUT", "/v1/batches", "", "unmeterable", "OpenAI batch creation"),  # any write method
        # path tricks: the stricter reading wins
        ("POST", "/v1/%62atches", "", "unmeterable", "OpenAI batch creation"),
        ("POST", "/v1/%2562atches", "", "unmeterable", "OpenAI batch creation"),  # double-encoded
        ("POST", "/v1/BATCHES/", "", "unmeterable", "OpenAI batch creation"),
        ("POST", "//v1//batches", "", "unmeterable", "OpenAI batch creation"),
        ("POST", "/v1/./batches/.", "", "unmeterable", "OpenAI batch creation"),
        ("POST", "/v1/files/../batches", "", "unmeterable", "OpenAI batch creation"),
        ("POST", "/v1/messages/%2e%2e/batches", "", "unmeterable", "OpenAI batch creation"),
        ("POST", "/v1\\batches", "", "unmeterable", "OpenAI batch creation"),
        ("POST", "/v1/batches;jsessionid=1", "", "unmeterable", "OpenAI batch creation"),
        ("POST", "/v1/batches%3Fa=b", "", "unmeterable", "OpenAI batch creation"),
        ("POST", "/v1/messages/batches?beta=true", "", "unmeterable", "Anthropic message batch creation"),
        ("GET", "/v1/%72ealtime", "", "unmeterable", "OpenAI Realtime"),
        # free: reading, counting, uploading, cancelling, moderating
        ("POST", "/v1/messages/count_tokens", "api.anthropic.com", "free", ""),
        ("GET", "/v1/models", "api.openai.com", "other", ""),
        ("GET", "/v1/batches/batch_1", "api.openai.com", "other", ""),
        ("GET", "/v1/messages/batches/msgbatch_1/results", "api.anthropic.com", "other", ""),
        ("DELETE", "/v1/files/file-1", "api.openai.com", "other", ""),
        ("POST", "/v1/files", "api.openai.com", "free", ""),
        ("POST", "/v1/uploads/upload_1/parts", "api.openai.com", "free", ""),
        ("POST", "/v1/moderations", "api.openai.com", "free", ""),
        ("POST", "/v1/batches/batch_1/cancel", "api.openai.com", "free", ""),
        ("POST", "/v1/fine_tuning/jobs/ftjob-1/cancel", "api.openai.com", "free", ""),
        ("POST", "/v1/responses/resp_1/cancel", "api.openai.com", "free", ""),
        ("GET", "/v1/responses/resp_1", "api.openai.com", "other", ""),
        ("GET", "/v1/messages", "", "other", ""),
        ("HEAD", "/v1/batches", "", "other", ""),
        ("OPTIONS", "/v1/images/generations", "", "other", ""),
        # unknown writes on the providers' own hosts; other hosts are not the budget's business
        ("POST", "/v1/evals/eval_1/runs", "api.openai.com", "unknown", "OpenAI /v1/evals/eval_1/runs"),
        ("POST", "/v1/responses/compact", "API.OpenAI.com.", "unknown", "OpenAI /v1/responses/compact"),
        ("POST", "/v1/batches/../files", "api.openai.com", "unknown", "OpenAI /v1/batches/../files"),
        (
            "POST",
            "/v1/x%0d%0aFAKE%20LOG%E2%80%AE<b>",
            "api.openai.com",
            "unknown",
            "OpenAI /v1/x??fake?log?<b>",
        ),
        ("POST", "/v1/evals/eval_1/runs", "example.com", "other", ""),
        ("POST", "/v1beta/interactions", GEMINI, "unknown", "Gemini /v1beta/interactions"),
        ("POST", "/v1alpha/auth_tokens", GEMINI, "unknown", "Gemini /v1alpha/auth_tokens"),
        (
            "POST",
            "/v1beta/openai/images/generations",
            GEMINI,
            "unknown",
            "Gemini /v1beta/openai/images/generations",
        ),
        ("POST", "/v1beta/tunedModels", GEMINI, "unknown", "Gemini /v1beta/tunedmodels"),
        ("POST", "/v1beta/models/x:newVerb", GEMINI, "unknown", "Gemini /v1beta/models/x:newverb"),
        ("POST", "/v2/models/x:newVerb", GEMINI, "unknown", "Gemini /v2/models/x:newverb"),  # any prefix
        ("POST", "/v1beta/models/x:newVerb", "example.com", "other", ""),
        ("GET", "/v1beta/models", GEMINI, "other", ""),
        ("GET", "/v1beta/batches/b1", GEMINI, "other", ""),
        ("DELETE", "/v1beta/cachedContents/c1", GEMINI, "other", ""),
        ("POST", "/api/event_logging/batch", "api.anthropic.com", "other", ""),
        ("POST", "/repos/o/r/issues", "api.github.com", "other", ""),
        # Ollama's native API: `/api/<name>` or `/ollama/api/<name>` (Open WebUI), on any host
        ("POST", "/api/chat", "", "metered", "ollama"),
        ("POST", "/api/generate", "127.0.0.1", "metered", "ollama"),
        ("POST", "/api/embed", "", "metered", "ollama"),
        ("POST", "/api/chat", "ollama.com", "metered", "ollama"),
        ("POST", "/ollama/api/chat", "", "metered", "ollama"),
        ("POST", "/ollama/api/generate?x=1", "", "metered", "ollama"),
        # respelled: escapes (also twice), case, `//`, `/./`, `..`, `;params`, backslashes
        ("POST", "/API//Chat/", "", "metered", "ollama"),
        ("POST", "/api/%63hat", "", "metered", "ollama"),
        ("POST", "/api%252Fgenerate", "", "metered", "ollama"),
        ("POST", "/api/./x/../embed", "", "metered", "ollama"),
        ("POST", "/api/chat;v=1", "", "metered", "ollama"),
        ("POST", "\\api\\chat", "", "metered", "ollama"),
        ("POST", "/api/chat/../generate", "", "metered", "ollama"),
        ("POST", "/x/../api/chat", "", "metered", "ollama"),
        ("POST", "/Ollama/API/Generate#f", "", "metered", "ollama"),
        ("POST", "/api/embeddings", "", "unmeterable", "Ollama legacy embeddings"),
        ("POST", "/api/Embeddings/", "", "unmeterable", "Ollama legacy embeddings"),
        ("POST", "/api/embed%64ings", "", "unmeterable", "Ollama legacy embeddings"),
        ("POST", "/ollama/api/embeddings", "", "unmeterable", "Ollama legacy embeddings"),
        ("POST", "/api/chat/../embeddings", "", "unmeterable", "Ollama legacy embeddings"),  # stricter
        ("POST", "/api/embeddings;x=1", "", "unmeterable", "Ollama legacy embeddings"),
        # free: model management and reads, also on ollama.com where unknown writes are not
        *[("POST", f"/api/{name}", "ollama.com", "free", "") for name in ("pull", "push", "create", "copy")],
        *[("POST", f"/api/{name}", "ollama.com", "free", "") for name in ("show", "tags", "ps", "version")],
        ("DELETE", "/api/delete", "ollama.com", "other", ""),  # a read-like method: never a call
        ("POST", "/api/delete", "ollama.com", "free", ""),
        ("POST", "/api/blobs/sha256:29fdb92e57cf0827", "ollama.com", "free", ""),
        ("POST", "/API/%50ull", "ollama.com", "free", ""),
        ("POST", "/api/web_search", "ollama.com", "unknown", "Ollama /api/web_search"),
        ("POST", "/v1/images/x", "ollama.com", "unknown", "Ollama /v1/images/x"),
        ("POST", "/api/web_search", "example.com", "other", ""),
        # ... but not what merely resembles it: reads, other prefixes, deeper paths
        ("GET", "/api/chat", "", "other", ""),
        ("POST", "/v2/api/chat", "", "other", ""),
        ("POST", "/api/chat/messages", "", "other", ""),
        ("POST", "/api/v4/chat", "", "other", ""),
        ("POST", "/apichat", "", "other", ""),
    ],
)
def test_classification(method: str, path: str, host: str, kind: str, label: str) -> None:
    call = classify(method, path, host)
    assert call.kind == kind, (method, path, host)
    if kind == "metered":
        assert call.endpoint == label
    else:
        assert call.what == label and call.endpoint is None


def test_normalized_paths() -> None:
    assert normalize_path("/V1//./Batches/?x=%2F") == "/v1/batches"
    assert normalize_path("/v1/a/../../../b") == "/b"
    assert normalize_path("") == "/"
    assert normalize_path("/v1/%ff%fe") == "/v1/\ufffd\ufffd"  # undecodable bytes do not raise


def test_the_model_a_gemini_path_names() -> None:
    assert gemini_model(f"{GEN}:generateContent?key=x") == "gemini-2.5-flash"
    assert gemini_model("/v1beta/models/Gemini-2.0-Flash%3AstreamGenerateContent") == "gemini-2.0-flash"
    assert gemini_model("/v1beta/models/x%0Ay:generateContent") == "x?y"  # nothing unprintable reaches a log
    assert gemini_model("/v1/chat/completions") == ""


@pytest.mark.parametrize(
    ("path", "content_type", "accept", "unreadable"),
    [
        (f"{GEN}:generateContent", "application/json", "", False),
        (f"{GEN}:streamGenerateContent?alt=sse&key=k", "", "*/*", False),
        (f"{GEN}:generateContent?alt=JSON", "", "", False),
        (f"{GEN}:generateContent?$alt=json;enum-encoding=int", "", "", False),
        (f"{GEN}:generateContent?salt=proto&key=alt%3Dproto", "", "", False),
        (f"{GEN}:generateContent?alt=proto", "", "", True),
        (f"{GEN}:generateContent?%24alt=proto", "", "", True),
        (f"{GEN}:generateContent?$ALT=Proto", "", "", True),
        (f"{GEN}:generateContent?alt=sse&alt=proto", "", "", True),  # either may win upstream
        (f"{GEN}:generateContent?alt=%2570roto", "", "", True),  # double-encoded
        (f"{GEN}:generateContent?alt=media", "", "", True),
        (f"{GEN}:generateContent", "application/x-protobuf", "", True),
        (f"{GEN}:generateContent", "application/json+protobuf", "", True),  # JSPB: arrays, no keys
        (f"{GEN}:generateContent", "application/json", "application/x-protobuf", True),
        (f"{GEN}:generateContent", "application/grpc", "", True),
    ],
)
def test_a_gemini_call_asking_for_an_answer_the_meter_cannot_read(
    path: str, content_type: str, accept: str, unreadable: bool
) -> None:
    assert gemini_unreadable(path, content_type, accept) is unreadable


def test_a_method_override_makes_a_read_a_write() -> None:
    assert classify("GET", "/v1beta/cachedContents").kind == "other"
    assert classify("GET", "/v1beta/cachedContents", "", ["POST"]).kind == "unmeterable"
    assert classify("GET", "/v1beta/x", GEMINI, [" patch "]).kind == "unknown"
    assert classify("POST", "/v1beta/x", GEMINI, ["GET"]).kind == "unknown"  # the method itself still counts


def test_every_unmeterable_class_says_what_and_why_and_picks_its_providers_error_shape() -> None:
    calls = [call for _pattern, _any, call in TABLE] + list(GEMINI_VERBS.values()) + list(OLLAMA.values())
    for call in calls:
        if call.kind in ("unmeterable", "metered"):
            assert call.what and (call.why or call.kind == "metered")
            name = call.what.split(" ", 1)[0]
            providers = {"Anthropic": "anthropic", "Gemini": "gemini", "Ollama": "ollama"}
            assert call.provider == providers.get(name, "openai")


@pytest.mark.parametrize(
    ("body", "want"),
    [
        (b'{"model":"gpt-5","input":"hi","background":true}', True),
        (b'{"model":"gpt-5","background": false}', False),
        (b'{"model":"gpt-5","background":null}', False),
        (b'{"model":"gpt-5","input":"hi"}', False),  # absent
        (b'{"metadata":{"background":true},"input":"background"}', False),  # nested, or a mere word
        (b'{"background":"true"}', True),  # a string: how the upstream coerces it is not ours to guess
        (b'{"background":1}', True),
        (b'{"background":false,"background":true}', True),  # either duplicate may win upstream
        (b'{"backgro\\u0075nd":true}', True),  # an escaped key is the same key
        ('{"background":true}'.encode("utf-16"), True),  # json.loads reads UTF-16 too
        ('{"background":true}'.encode("utf-32-le"), True),
        (b'[{"background":true}]', False),  # not an object: the upstream rejects it
        (b"", False),
        (b'{"background":tru', None),  # malformed but mentions it: a lenient reader might not reject it
        (b'{"input":"\\u00e9"', None),
        (b'{"input":"plain"', False),  # malformed, no way to spell the key: the upstream rejects it
        (b'{"background":true,"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}", None),  # too deep to parse
        (b'{"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}", False),  # deep, but cannot name the key
    ],
)
def test_background_detection(body: bytes, want: bool | None) -> None:
    assert background_requested(body) is want


def test_background_detection_is_bounded_for_a_huge_body() -> None:
    big = b'{"input":"' + b"a" * MAX_CHECKED_BODY + b'","background":false}'
    assert background_requested(big) is None  # not parsed: the caller refuses under a budget
    just_under = b'{"input":"' + b"a" * (MAX_CHECKED_BODY - 100) + b'","background":true}'
    assert background_requested(just_under) is True


@pytest.mark.parametrize(
    ("obj", "head", "want"),
    [
        ({"status": "queued", "background": True, "usage": None}, b"", True),
        ({"status": "in_progress", "background": True}, b"", True),
        ({"status": "completed", "background": True}, b"", False),  # done: its usage is in it
        ({"status": "queued", "background": "true"}, b"", False),  # not what OpenAI sends
        ({"status": "queued"}, b'{"background": true, "status": "queued"}', False),  # parsed wins
        # too large to keep whole (rebuilt from its ends) or unparseable: the first bytes tell
        ({"_rebuilt": True}, b'{"id":"r","status":"queued","background":true,"instructions":"', True),
        (None, b'{"status" : "in_progress",\n "background" : true', True),
        # a key cannot be forged inside a string: its quotes are escaped
        ({"_rebuilt": True}, b'{"status":"queued","instructions":"\\"background\\": true', False),
        (None, b'{"status":"queued","background":trueish', False),
        (None, b"", False),
    ],
)
def test_background_answer(obj: dict[str, object] | None, head: bytes, want: bool) -> None:
    assert background_answer(obj, head) is want


def _limits(remaining: int) -> dict[str, object]:
    limit = {"key": "team:daily_tokens:d", "unit": "tokens", "remaining": remaining, "message": "used up"}
    return {"prices": {}, "limits": {"team": [limit]}}


def test_budget_verdicts_per_class() -> None:
    budgets = VaultBudgets()
    batch = classify("POST", "/v1/messages/batches")
    metered = classify("POST", "/v1/messages")
    free = classify("POST", "/v1/messages/count_tokens", "api.anthropic.com")
    # No budget: nothing is refused (the addon marks the unmeterable call "unmetered").
    assert budgets.refusal("team", batch) is None and budgets.refusal("team", metered) is None
    # Headroom left: metered calls pass, unmeterable ones do not.
    budgets.set_state(_limits(1000))
    assert budgets.refusal("team", metered) is None and budgets.refusal("team", free) is None
    refused = budgets.refusal("team", batch)
    assert refused is not None
    response, reason = refused
    assert response.status_code == 403 and reason == f"{MARKER} unmeterable: Anthropic message batch creation"
    body = json.loads(response.get_text() or "")
    assert body["type"] == "error" and body["error"]["type"] == "permission_error"
    message = body["error"]["message"]
    assert message.startswith(MARKER) and "Anthropic message batch creation" in message
    assert "later" in message and "/budget set" in message and "off" in message
    openai = budgets.refusal("team", classify("POST", "/v1/images/generations"))
    assert (
        openai is not None and json.loads(openai[0].get_text() or "")["error"]["code"] == "budget_exhausted"
    )
    gemini = budgets.refusal("team", classify("POST", f"{GEN}:batchGenerateContent"))
    assert gemini is not None
    error = json.loads(gemini[0].get_text() or "")["error"]
    assert (
        error["code"] == 403
        and error["status"] == "PERMISSION_DENIED"
        and set(error)
        == {
            "code",
            "message",
            "status",
        }
    )
    assert error["message"].startswith(MARKER) and "Gemini batch creation" in error["message"]
    ollama = budgets.refusal("team", classify("POST", "/api/embeddings"))
    assert ollama is not None and ollama[0].status_code == 403
    said = json.loads(ollama[0].get_text() or "")
    assert set(said) == {"error"} and isinstance(said["error"], str)  # Ollama's shape: a bare string
    assert said["error"].startswith(MARKER) and "Ollama legacy embeddings" in said["error"]
    assert budgets.refusal("other", batch) is None  # another group's budget is not this one's
    # Exhausted: the metered call is refused too, with the limit's own message.
    budgets.set_state(_limits(0))
    exhausted = budgets.refusal("team", metered)
    assert exhausted is not None and exhausted[1] == f"{MARKER} team:daily_tokens:d exhausted"
    chat = budgets.refusal("team", classify("POST", "/api/chat"))
    assert chat is not None and json.loads(chat[0].get_text() or "") == {"error": f"{MARKER} used up"}
    assert budgets.refusal("team", free) is None


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### Model spend")
    return text[start : text.index("\n### ", start + 1)]


def test_readme_lists_exactly_the_tables_paths() -> None:
    """The owner reads the README to know what a budget sees; it must not drift from the code."""
    section = _readme_section()
    found = re.findall(r"`(?:POST |any method )?(/(?:v1|v1beta|\*|upload)/[^`\s]*)`", section)
    listed = {path for path in found if "…" not in path}  # `/v1beta/openai/…` is an example prefix
    assert listed == {pattern for pattern, _any, _call in TABLE}
    verbs = set(re.findall(r"`:([A-Za-z]+)`", section))
    assert verbs == set(GEMINI_VERBS)
    assert set(re.findall(r"`(?:POST )?/api/([a-z_]+)`", section)) == set(OLLAMA)
