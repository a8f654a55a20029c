"""Validated configuration from `config.toml`.

Every section forbids unknown keys and every enum-like value is a Literal, so a typo
or an unsupported value (say `backend = "podman"`) stops startup with a message that
names the key, instead of silently falling back to a weaker default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core import paths
from core.budget import BudgetConfig
from core.config_base import HOST_PORT, ConfigError, Section, http_url
from core.config_channels import ConsoleConfig, SlackConfig, TelegramConfig
from core.config_listen import DashboardConfig, MetricsConfig, is_loopback
from core.http_approval import VaultApprovalConfig, VaultPolicyEntry
from core.pricing import ModelPrice
from core.senders import SenderPolicy
from core.wallet.settings import WalletConfig

CONFIG_FILE = "config.toml"

# The sections that live in their own modules are part of this module's interface too.
__all__ = [
    "ConfigError",
    "ConsoleConfig",
    "DashboardConfig",
    "MetricsConfig",
    "SlackConfig",
    "TelegramConfig",
    "is_loopback",
]


class ModelConfig(Section):
    provider: Literal["anthropic", "openai"] = "anthropic"
    name: str = "claude-sonnet-4-5"
    base_url: str = "https://api.anthropic.com"
    max_tokens: int = Field(4096, ge=1, le=200_000)
    timeout_s: float = Field(120, gt=0, le=3600)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value, "https://api.anthropic.com")


class SandboxConfig(Section):
    backend: Literal["docker", "bwrap"] = "docker"
    runtime: Literal["runc", "runsc"] = Field(
        "runc",
        description="docker backend only: runc (the engine's default runtime) or runsc (gVisor)",
    )
    image: str = "clawgate-sandbox:latest"
    idle_timeout_s: float = Field(600, gt=0)
    max_containers: int = Field(4, ge=1, le=256)
    memory_mb: int = Field(1024, ge=64)
    cpus: float = Field(1.0, gt=0, le=64)
    pids_limit: int = Field(256, ge=16)
    tmpfs_mb: int = Field(256, ge=8)
    run_as_uid: int = Field(
        10_000,
        ge=1,
        le=2**31,
        description="as root, group n's sandbox runs as uid:gid run_as_uid + n (see groups.uids)",
    )
    turn_timeout_s: float = Field(900, gt=0)
    group_quota_mb: int = Field(
        1024, ge=1, description="disk a group's folder (+ its inbox) may use; over it, turns are refused"
    )
    group_max_files: int = Field(
        200_000, ge=100, description="entries a group's folder may hold (bounds the usage walk)"
    )
    min_free_mb: int = Field(
        1024, ge=0, description="free space kept in the data dir; below it no sandbox runs or writes"
    )
    disk_check_s: float = Field(1.0, gt=0, le=60, description="how often a live sandbox's usage is measured")

    @model_validator(mode="after")
    def _runtime_needs_docker(self) -> SandboxConfig:
        # bwrap has no OCI runtime; silently ignoring runsc there would promise gVisor and not give it.
        if self.runtime != "runc" and self.backend != "docker":
            raise ValueError(
                f'sandbox.runtime = "{self.runtime}" needs backend = "docker" '
                f'(got backend = "{self.backend}")'
            )
        return self


AgentRuntime = Literal["builtin", "claude"]
AGENT_RUNTIMES: tuple[AgentRuntime, ...] = ("builtin", "claude")


def claude_variant(image: str) -> str:
    """The `claude` runtime's image named after the built-in one: `repo:tag` → `repo:tag-claude`.

    Why a derived tag rather than a second required key: `clawgate image build --runtime claude`
    and the gateway agree on it without any configuration, and two checkouts with their own
    `sandbox.image` tags never share a variant.
    """
    last_slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > last_slash:
        return f"{image}-claude"
    return f"{image}:claude"


class AgentConfig(Section):
    """The agent in each group's sandbox: which runtime, and the built-in loop's limits.

    See README 'Agent runtimes', 'Configuration' and 'Memory, caching and usage'.
    """

    runtime: AgentRuntime = Field(
        "builtin",
        description="builtin (the small tool loop, any model) or claude (the Claude Agent SDK)",
    )
    claude_image: str = Field(
        "",
        description="image of the claude runtime; default: sandbox.image with '-claude' added to its tag",
    )
    max_model_calls: int = Field(
        25, ge=1, le=500, description="model calls one turn may make (tool loop) before it gives up"
    )
    history_budget_tokens: int = Field(
        40_000,
        ge=1_000,
        le=2_000_000,
        description="estimated tokens of history sent per request; past it older turns are summarised",
    )


class IpcConfig(Section):
    """What one group's `ipc.sock` may cost the host (see gateway.ipc_limits; README 'Configuration')."""

    max_connections: int = Field(32, ge=2, le=4096, description="open connections per group")
    max_line_bytes: int = Field(256 * 1024, ge=64 * 1024, le=16 * 1024 * 1024)
    line_timeout_s: float = Field(10, gt=0, le=600, description="first byte of a line to its newline")
    idle_timeout_s: float | None = Field(
        None, gt=0, description="silence before a connection is closed; default sandbox.turn_timeout_s + 60"
    )
    requests_per_s: float = Field(20, gt=0, description="methods other than the turn protocol; refused")
    requests_burst: float = Field(100, ge=1)
    lines_per_s: float = Field(1000, gt=0, description="every line, 1 unit per KiB; delayed, not refused")
    lines_burst: float = Field(1000, ge=1)


class VaultRateLimitConfig(Section):
    """Sliding one-minute windows; 0 disables. Over the limit the vault answers 429 + Retry-After."""

    per_group_per_minute: int = Field(0, ge=0)
    per_host_per_minute: int = Field(0, ge=0, description="per (group, upstream host)")


class VaultConfig(Section):
    allow_private_upstreams: list[str] = Field(default_factory=list)
    unscoped: Literal["forward", "refuse"] = Field(
        "forward", description="a group not allowed to use the matching secret: forward bare, or 403"
    )
    egress: dict[str, list[str]] = Field(
        default_factory=dict,
        description='group -> host patterns ("*" = all); "default" for groups without an entry',
    )
    rate_limit: VaultRateLimitConfig = VaultRateLimitConfig()
    max_request_bytes: int = Field(
        32 * 1024 * 1024,
        description="request bodies above this get 413 (declared) or are cut (streamed); no 'unlimited'",
    )
    max_connections_per_group: int = Field(
        64, ge=1, description="open connections per group on vault.sock; more are answered 503 at once"
    )
    idle_timeout_s: float = Field(
        300, gt=0, description="a vault.sock connection moving no bytes this long is closed"
    )
    max_response_bytes: int = Field(0, ge=0, description="0 = unlimited; larger responses are aborted")
    upstream_ca: str | None = Field(
        None, description="PEM CA bundle that REPLACES the system store for upstream TLS (private CAs)"
    )
    approval: VaultApprovalConfig = VaultApprovalConfig()
    policy: list[VaultPolicyEntry] = Field(
        default_factory=list, description="requests that need the owner's approval (core/http_approval.py)"
    )

    @field_validator("max_request_bytes")
    @classmethod
    def _bounded_requests(cls, value: int) -> int:
        # 0 used to mean "unlimited"; a vault that forwards unbounded bodies can be made to
        # hold them (issue 11), so a bound is required. Streamed bodies cost no memory.
        if value < 1:
            raise ValueError(
                "must be at least 1 byte; 0 no longer means unlimited. Set the largest upload a "
                "sandbox needs, e.g. 1073741824 for 1 GiB (bodies are streamed, not held in memory)"
            )
        return value

    @property
    def hold_timeout_s(self) -> float:
        """How long a request is held for the owner: `approval.timeout_s`, but at most 0.9 ×
        `idle_timeout_s` — a held connection moves no bytes, and the relay must not cut it as
        idle before the owner's decision (gateway/preflight.py warns when this shortens it)."""
        return min(self.approval.timeout_s, self.idle_timeout_s * 0.9)

    @field_validator("allow_private_upstreams")
    @classmethod
    def _host_ports(cls, values: list[str]) -> list[str]:
        for value in values:
            if not HOST_PORT.match(value):
                raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:11434)")
        return [v.lower() for v in values]


class AdminConfig(Section):
    """Who may run admin commands in the main chat. The console's local user always may."""

    users: list[str] = Field(default_factory=list, description='namespaced user ids, e.g. "tg:12345"')


class GroupsConfig(Section):
    """Defaults for groups registered from now on, and how long an unknown sender waits for the owner."""

    default_sender_policy: SenderPolicy = Field(
        "open", description="open | members | approval; a registration may choose another"
    )
    sender_approval_timeout_s: float = Field(
        3600, gt=0, le=7 * 86400, description="an unanswered Allow/Deny prompt expires (message not answered)"
    )
    # A public chat can be flooded with throw-away accounts: each would be one prompt in the
    # owner's main chat. Past these caps unknown senders are still held, asked oldest first as
    # open prompts are answered (gateway/senders.py).
    max_open_sender_prompts: int = Field(
        3, ge=1, le=100, description="Allow/Deny prompts about unknown senders open at once per group"
    )
    max_open_sender_prompts_total: int = Field(
        10, ge=1, le=1000, description="the same, over all groups together"
    )

    @model_validator(mode="after")
    def _group_cap_within_total(self) -> GroupsConfig:
        if self.max_open_sender_prompts > self.max_open_sender_prompts_total:
            raise ValueError(
                f"groups.max_open_sender_prompts ({self.max_open_sender_prompts}) must not exceed "
                f"groups.max_open_sender_prompts_total ({self.max_open_sender_prompts_total})"
            )
        return self


class RetryConfig(Section):
    """Transient failures (Docker hiccups, model 429/5xx, channel timeouts) are retried with backoff."""

    max_attempts: int = Field(4, ge=1, le=20)
    base_delay_s: float = Field(2.0, gt=0, le=600)
    max_delay_s: float = Field(120.0, gt=0, le=3600)


class MountsConfig(Section):
    project_root: str | None = Field(
        None, description="main group only: seen read-only at /workspace/project, .env shadowed"
    )

    @field_validator("project_root")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("/") or value.startswith("~")):
            raise ValueError("must be an absolute path or start with ~, e.g. ~/src/myproject")
        return value


class RetentionConfig(Section):
    """How long message bodies stay in the database (gateway.retention); 0 days = forever.

    The newest `context_messages` of every chat and every message still waiting for an answer
    are always kept, so pruning never takes anything an agent's next turn would see.
    """

    message_days: int = Field(
        365, ge=0, le=36500, description="empty the text of answered messages older than this"
    )
    unregistered_days: int = Field(
        30, ge=0, le=36500, description="delete messages of chats no group is registered for after this"
    )


class Config(Section):
    assistant_name: str = Field("Andy", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    main_chat: str | None = Field(
        None,
        pattern=r"^(console|tg|slack):\S+$",
        description='the owner\'s admin chat, e.g. "tg:-1001234" (see /chatid); default: the console',
    )
    context_messages: int = Field(50, ge=0, le=1000, description="untriggered messages kept as context")
    model: ModelConfig = ModelConfig()
    sandbox: SandboxConfig = SandboxConfig()
    agent: AgentConfig = AgentConfig()
    vault: VaultConfig = VaultConfig()
    console: ConsoleConfig = ConsoleConfig()
    slack: SlackConfig = Field(default_factory=SlackConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    mounts: MountsConfig = MountsConfig()
    admin: AdminConfig = AdminConfig()
    groups: GroupsConfig = GroupsConfig()
    retry: RetryConfig = RetryConfig()
    wallet: WalletConfig = WalletConfig()
    ipc: IpcConfig = IpcConfig()
    metrics: MetricsConfig = MetricsConfig()
    dashboard: DashboardConfig = DashboardConfig()
    retention: RetentionConfig = RetentionConfig()
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="USD per million tokens per model or model prefix, over core.pricing's defaults;"
        ' "default" prices models nothing else matches',
    )

    @field_validator("prices")
    @classmethod
    def _price_keys(cls, value: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        for key in value:
            if not key.strip() or len(key) > 100:
                raise ValueError(f"a model name or prefix is 1 to 100 characters (got {key[:120]!r})")
        return value

    @model_validator(mode="after")
    def _ipc_idle_outlasts_a_turn(self) -> Config:
        # The agent says nothing on its connection while it works on a turn; closing it as idle
        # would kill the agent and lose the answer.
        idle = self.ipc.idle_timeout_s
        if idle is not None and idle <= self.sandbox.turn_timeout_s:
            raise ValueError(
                f"ipc.idle_timeout_s ({idle:g}) must be longer than "
                f"sandbox.turn_timeout_s ({self.sandbox.turn_timeout_s:g})"
            )
        return self

    @property
    def ipc_idle_timeout_s(self) -> float:
        """`[ipc] idle_timeout_s`, or a minute longer than the longest turn when unset."""
        idle = self.ipc.idle_timeout_s
        return idle if idle is not None else self.sandbox.turn_timeout_s + 60

    @model_validator(mode="after")
    def _approval_fits_in_a_turn(self) -> Config:
        # A wallet request blocks the agent's tool call until the owner decides; a turn that
        # times out first would kill the agent while the prompt is still open.
        if self.wallet.approval_timeout_s >= self.sandbox.turn_timeout_s:
            raise ValueError(
                f"wallet.approval_timeout_s ({self.wallet.approval_timeout_s:g}) must be shorter than "
                f"sandbox.turn_timeout_s ({self.sandbox.turn_timeout_s:g})"
            )
        return self

    @model_validator(mode="after")
    def _model_call_fits_vault_idle(self) -> Config:
        # A model call that is silent while the model thinks must not be cut as idle.
        if self.vault.idle_timeout_s <= self.model.timeout_s:
            raise ValueError(
                f"vault.idle_timeout_s ({self.vault.idle_timeout_s:g}) must be longer than "
                f"model.timeout_s ({self.model.timeout_s:g})"
            )
        return self

    def runtime_image(self, runtime: AgentRuntime) -> str:
        """The sandbox image a group on `runtime` runs in."""
        if runtime == "claude":
            return self.agent.claude_image or claude_variant(self.sandbox.image)
        return self.sandbox.image

    @model_validator(mode="after")
    def _claude_needs_anthropic(self) -> Config:
        # The Claude Code CLI speaks only the Anthropic Messages API; pointing it at an
        # OpenAI-compatible server would fail on every turn instead of at start-up.
        if self.agent.runtime == "claude" and self.model.provider != "anthropic":
            raise ValueError(
                f'agent.runtime = "claude" needs model.provider = "anthropic" (got "{self.model.provider}")'
            )
        if self.agent.runtime == "claude" and self.sandbox.backend == "bwrap":
            raise ValueError(
                'agent.runtime = "claude" needs sandbox.backend = "docker" (bwrap runs builtin only)'
            )
        return self

    @property
    def default_trigger(self) -> str:
        return f"@{self.assistant_name}"


def _describe(error: ValidationError, source: Path) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see README 'Configuration')"
        elif item["type"] == "literal_error":
            message = f"{message} (got {item.get('input')!r})"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def parse(text: str, source: Path) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load(config_dir: Path | None = None) -> Config:
    """Load `config.toml`; a missing file means all defaults."""
    path = (config_dir or paths.config_dir()) / CONFIG_FILE
    if not path.exists():
        return Config()
    return parse(path.read_text(encoding="utf-8"), path)


DEFAULT_CONFIG_TOML = """\
# clawgate configuration. Every key is optional; see README.md "Configuration".
assistant_name = "Andy"

[model]
provider = "anthropic"              # anthropic | openai (any OpenAI-compatible server)
name = "claude-sonnet-4-5"
base_url = "https://api.anthropic.com"

[sandbox]
backend = "docker"                  # docker | bwrap (see README "bubblewrap backend")
runtime = "runc"                    # docker only: runc | runsc (gVisor; see README "Choosing a sandbox")
image = "clawgate-sandbox:latest"
idle_timeout_s = 600
max_containers = 4
memory_mb = 1024
cpus = 1.0
pids_limit = 256

[agent]
runtime = "builtin"                 # builtin | claude (Claude Agent SDK; see README "Agent runtimes")

[vault]
# Private/loopback upstreams are refused unless listed here, e.g. a local model server:
allow_private_upstreams = []
"""
