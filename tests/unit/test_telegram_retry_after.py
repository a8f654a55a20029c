"""Telegram's 429 `retry_after`, read once for sending and polling (channels/telegram_send.py).

python-telegram-bot gives an int today and a timedelta in its next major version, warning on
every read; the value comes from Telegram's answer, so a broken or hostile one must neither
crash the caller nor park the poll loop.
"""

from __future__ import annotations

import warnings
from datetime import timedelta

import pytest
from telegram.error import RetryAfter

from channels.telegram_poll import _wait_s
from channels.telegram_send import UNREADABLE_RETRY_AFTER_S, retry_after_s


def _retry(given: int | timedelta) -> RetryAfter:
    with warnings.catch_warnings():  # PTB reads its own attribute (and warns) building the message
        warnings.simplefilter("ignore")
        return RetryAfter(given)


@pytest.mark.parametrize(
    ("given", "seconds"),
    [(5, 5.0), (timedelta(seconds=7), 7.0), (timedelta(milliseconds=1500), 1.5), (0, 0.0)],
)
def test_both_forms_read_as_seconds_without_a_warning(given: int | timedelta, seconds: float) -> None:
    exc = _retry(given)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PTB's deprecation warning on our read would fail the test
        assert retry_after_s(exc) == seconds


@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), "soon", None])
def test_an_unreadable_value_is_the_default_pause(garbage: object) -> None:
    exc = _retry(1)
    exc._retry_after = garbage  # type: ignore[assignment]  # what a broken answer could carry
    assert retry_after_s(exc) == UNREADABLE_RETRY_AFTER_S


@pytest.mark.parametrize(
    ("given", "wait"), [(0, 1.0), (42, 42.0), (10**9, 300.0), (timedelta(days=2), 300.0)]
)
def test_polling_waits_between_one_second_and_five_minutes(given: int | timedelta, wait: float) -> None:
    assert _wait_s(_retry(given)) == wait
