"""Secret values are cut out of log records — message, arguments and traceback alike."""

from __future__ import annotations

import io
import logging

from pydantic import SecretStr

from core import redaction
from core.config import SlackConfig, TelegramConfig
from core.redaction import RedactingFormatter, one_line, scrub


def test_a_token_in_a_traceback_is_redacted_from_the_log_record() -> None:
    token = "112233:redaction-unit-token-value"
    redaction.register([token])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(f"The token `{token}` was rejected by the server.")
        except ValueError:
            logger.error("POST https://api.telegram.org/bot%s/getMe failed", token, exc_info=True)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "Traceback" in text and text.count("[redacted]") == 2
    assert token not in text and "redaction-unit-token-value" not in text


def test_every_secret_of_a_config_is_registered_also_url_encoded() -> None:
    telegram = TelegramConfig(enabled=True, token=SecretStr("445566:config-walk-token"))
    slack = SlackConfig(
        enabled=True, bot_token=SecretStr("xoxb-config-walk"), app_token=SecretStr("xapp-walk-1")
    )
    for section in (telegram, slack):
        redaction.register_config(section)
    text = scrub("a 445566%3Aconfig-walk-token b xoxb-config-walk c xapp-walk-1")
    assert text == "a [redacted] b [redacted] c [redacted]"


def test_one_line_keeps_the_type_and_only_the_first_line() -> None:
    redaction.register(["one-line-secret-xyz"])
    exc = ConnectionError("refused for one-line-secret-xyz\nresponse body: {...}")
    assert one_line(exc) == "ConnectionError: refused for [redacted]"
