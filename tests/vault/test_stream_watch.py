"""proxy/stream_watch.py reads mitmproxy internals: this fails loudly, naming them, if they change.

The behaviour itself (a reset HTTP/2 stream withdraws its held request) is proven through the
real vault process in tests/vault/test_vault_holds_h2_e2e.py.
"""

from __future__ import annotations

import logging

import pytest
from mitmproxy.test import tflow
from mitmproxy.version import VERSION

from proxy.stream_watch import CHECKED_MITMPROXY, StreamWatch, problem


def test_the_installed_mitmproxy_has_what_the_stream_watch_reads() -> None:
    trouble = problem()
    assert trouble is None, (
        f"mitmproxy {VERSION} changed under proxy/stream_watch.py (checked against "
        f"{CHECKED_MITMPROXY}): {trouble}. Re-check it against the new _http2.py / layer.py."
    )


def test_the_checked_version_is_the_same_major_release() -> None:
    assert VERSION.split(".")[0] == CHECKED_MITMPROXY.split(".")[0]


def test_a_flow_whose_stream_cannot_be_found_is_never_called_withdrawn_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = StreamWatch()
    with caplog.at_level(logging.ERROR, logger="clawgate.vault.streams"):
        checks = [watch.withdrawn(tflow.tflow()) for _ in range(3)]
        assert [check() for check in checks] == [False] * 3
    assert len([r for r in caplog.records if "cannot find the stream" in r.getMessage()]) == 1
