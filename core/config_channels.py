"""The chat channels' sections of `config.toml`: `[console]`, `[slack]`, `[telegram]`.

Tokens and secrets are `SecretStr`, so no repr, log line or traceback of a loaded config shows
them; they may also come from `CLAWGATE_*` environment variables (core.config.load).
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from core.config_base import Section, http_url


class ConsoleConfig(Section):
    enabled: bool = True
    main_chat: str = "console:main"


class SlackConfig(Section):
    """The Slack app. Tokens come from here or `CLAWGATE_SLACK_*` env; they are never logged."""

    enabled: bool = False
    bot_token: SecretStr | None = Field(None, description="xoxb-…; or env CLAWGATE_SLACK_BOT_TOKEN")
    app_token: SecretStr | None = Field(None, description="xapp-… (Socket Mode); or CLAWGATE_SLACK_APP_TOKEN")
    signing_secret: SecretStr | None = Field(None, description="HTTP mode; or CLAWGATE_SLACK_SIGNING_SECRET")
    base_url: str = "https://slack.com/api/"
    mode: Literal["socket", "http"] = "socket"
    http_host: str = "127.0.0.1"
    http_port: int = Field(3000, ge=0, le=65535)
    http_path: str = Field("/slack/events", pattern=r"^/")

    @model_validator(mode="before")
    @classmethod
    def _from_env(cls, data: object) -> object:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("bot_token", "app_token", "signing_secret"):
                env = os.environ.get(f"CLAWGATE_SLACK_{key.upper()}")
                if data.get(key) is None and env:
                    data[key] = env
        return data

    @field_validator("base_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return http_url(value, "https://slack.com/api/") + "/"

    @model_validator(mode="after")
    def _tokens_present(self) -> SlackConfig:
        if not self.enabled:
            return self
        needed = ["bot_token", "app_token" if self.mode == "socket" else "signing_secret"]
        for key in needed:
            value = getattr(self, key)
            if value is None or not value.get_secret_value().strip():  # "" would sign with an empty key
                raise ValueError(
                    f"slack.{key} is required when slack is enabled in {self.mode} mode "
                    f"(set it in config.toml or env CLAWGATE_SLACK_{key.upper()})"
                )
        return self


class TelegramConfig(Section):
    """The Telegram channel; the token may come from env `CLAWGATE_TELEGRAM_TOKEN` instead (never logged)."""

    enabled: bool = False
    token: SecretStr | None = Field(None, description="from @BotFather; or env CLAWGATE_TELEGRAM_TOKEN")
    base_url: str = Field("https://api.telegram.org", description="Bot API server (a local one or a fake)")
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = Field(None, description="public https URL Telegram posts to (webhook mode)")
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(8443, ge=1, le=65535)
    webhook_secret_token: SecretStr | None = Field(None, description="checked on every webhook request")
    max_file_mb: float = Field(20, ge=0, le=2000, description="photos/documents larger are not saved")

    @model_validator(mode="before")
    @classmethod
    def _from_env(cls, data: object) -> object:
        env = os.environ.get("CLAWGATE_TELEGRAM_TOKEN")
        if isinstance(data, dict) and data.get("token") is None and env:
            data = {**data, "token": env}
        return data

    @model_validator(mode="after")
    def _complete(self) -> TelegramConfig:
        if self.enabled and self.token is None:
            raise ValueError(
                "telegram.token is required when telegram is enabled "
                "(set it in config.toml or env CLAWGATE_TELEGRAM_TOKEN)"
            )
        if self.enabled and self.mode == "webhook" and not self.webhook_url:
            raise ValueError("telegram.webhook_url is required in webhook mode (the public https URL)")
        if self.webhook_secret_token is not None and not re.fullmatch(
            r"[A-Za-z0-9_-]{1,256}", self.webhook_secret_token.get_secret_value()
        ):
            raise ValueError("telegram.webhook_secret_token: 1-256 characters of A-Z a-z 0-9 _ -")
        return self

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value, "https://api.telegram.org")
