"""Runtime configuration, read once from the environment the sandbox backend sets.

Why an immutable object: every other module receives exactly the values it needs and
tests can build one directly without touching ``os.environ``.
"""

import os
from collections.abc import Mapping

PROVIDERS = ("anthropic", "openai")
DEFAULT_BASE_URLS = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com/v1",
}
API_KEY_VARS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


class ConfigError(Exception):
    """A missing or invalid setting; fatal at startup, message names the key and the fix."""


_FIELDS = {
    "ipc_socket": "/run/clawgate/ipc.sock",
    "vault_socket": "/run/clawgate/vault.sock",
    "proxy_port": 3128,
    "provider": "anthropic",
    "model": "",
    "base_url": DEFAULT_BASE_URLS["anthropic"],
    "max_tokens": 4096,
    "model_timeout": 120.0,
    "max_model_calls": 25,
    "history_budget_tokens": 40_000,
    "api_key": "placeholder",
    "assistant_name": "Andy",
    "group": "",
    "is_main": False,
    "group_dir": "/workspace/group",
    "global_dir": "/workspace/global",
}


class Config:
    """Everything the runtime needs to know about its sandbox and its model.

    A plain immutable class rather than a dataclass: ``dataclasses`` pulls in ``inspect``
    (~10 ms), and cold start is benchmarked. Unknown keyword arguments are a TypeError.
    """

    __slots__ = tuple(_FIELDS)
    ipc_socket: str
    vault_socket: str
    proxy_port: int
    provider: str
    model: str
    base_url: str
    max_tokens: int
    model_timeout: float
    max_model_calls: int
    history_budget_tokens: int
    api_key: str
    assistant_name: str
    group: str
    is_main: bool
    group_dir: str
    global_dir: str

    def __init__(self, **values: object) -> None:
        unknown = set(values) - set(_FIELDS)
        if unknown:
            raise TypeError(f"unknown Config fields: {sorted(unknown)}")
        for name, default in _FIELDS.items():
            object.__setattr__(self, name, values.get(name, default))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Config is immutable")

    def replace(self, **changes: object) -> "Config":
        """A copy with some fields changed (handy in tests)."""
        return Config(**{**{n: getattr(self, n) for n in _FIELDS}, **changes})

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in _FIELDS)
        return f"Config({inner})"


def _int(env: Mapping[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not an integer; set it to a whole number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{key}={value} is out of range; use a value between {lo} and {hi}")
    return value


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number; set it to seconds, e.g. 120") from None
    if value <= 0:
        raise ConfigError(f"{key}={value} must be positive")
    return value


def load(env: Mapping[str, str] | None = None) -> Config:
    """Build the config from ``env`` (default ``os.environ``); raise ConfigError on bad values.

    Unknown providers are rejected rather than defaulted (design: never guess a backend).
    """
    env = os.environ if env is None else env
    provider = env.get("CLAWGATE_MODEL_PROVIDER", "anthropic").strip().lower() or "anthropic"
    if provider not in PROVIDERS:
        raise ConfigError(
            f"CLAWGATE_MODEL_PROVIDER={provider!r} is not supported; use one of {', '.join(PROVIDERS)}"
        )
    model = env.get("CLAWGATE_MODEL", "").strip()
    if not model:
        raise ConfigError("CLAWGATE_MODEL is not set; set it to the model name, e.g. claude-sonnet-4-5")
    base_url = (env.get("CLAWGATE_MODEL_BASE_URL", "").strip() or DEFAULT_BASE_URLS[provider]).rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"CLAWGATE_MODEL_BASE_URL={base_url!r} must start with http:// or https://")
    return Config(
        ipc_socket=env.get("CLAWGATE_IPC_SOCKET", "").strip() or str(_FIELDS["ipc_socket"]),
        vault_socket=env.get("CLAWGATE_VAULT_SOCKET", "").strip() or str(_FIELDS["vault_socket"]),
        proxy_port=_int(env, "CLAWGATE_PROXY_PORT", 3128, 1, 65535),
        provider=provider,
        model=model,
        base_url=base_url,
        max_tokens=_int(env, "CLAWGATE_MAX_TOKENS", 4096, 1, 1_000_000),
        model_timeout=_float(env, "CLAWGATE_MODEL_TIMEOUT", 120.0),
        max_model_calls=_int(env, "CLAWGATE_MAX_MODEL_CALLS", 25, 1, 1000),
        history_budget_tokens=_int(env, "CLAWGATE_HISTORY_BUDGET_TOKENS", 40_000, 1000, 10_000_000),
        api_key=env.get(API_KEY_VARS[provider], "") or "placeholder",
        assistant_name=env.get("CLAWGATE_ASSISTANT_NAME", "").strip() or "Andy",
        group=env.get("CLAWGATE_GROUP", "").strip(),
        is_main=env.get("CLAWGATE_IS_MAIN", "0").strip() == "1",
        group_dir=env.get("CLAWGATE_GROUP_DIR", "").strip() or str(_FIELDS["group_dir"]),
        global_dir=env.get("CLAWGATE_GLOBAL_DIR", "").strip() or str(_FIELDS["global_dir"]),
    )
