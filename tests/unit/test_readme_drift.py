"""The README and the code must not drift apart: the CLI and the config keys, both directions.

A newcomer learns the commands and the config keys from the README. A command it names that
the CLI does not have, or a config key the models would refuse, costs them an evening; a command
or key that exists but is not documented is a feature nobody can find. So this test reads the
README as a user would — commands inside code (`clawgate vault log`, code blocks), config keys
inside TOML code blocks (sections, `key = …` lines, commented-out ones too) and code spans in the
prose (`[vault] unscoped`, `retry.max_attempts`) — and compares them with the click command tree
and the pydantic config models, walked recursively.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from pathlib import Path

import click
import pytest
from pydantic import BaseModel

from core.config import Config
from gateway.cli import main as cli_main
from tests.conftest import PRODUCT_DEFAULTS

README = Path(__file__).resolve().parents[2] / "README.md"

Path_ = tuple[str, ...]
ANY_KEY = "*"  # a key of a user-named table: a group folder, a token contract, a key name

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SPAN = re.compile(r"`([^`]+)`")
_COMMAND = re.compile(r"(?<![\w.-])clawgate(?![\w.:-])((?:[ \t]+[a-z][a-z0-9-]*)*)")
_TOML_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_TOML_KEY = re.compile(r"^\s*#?\s*([a-z_][a-z0-9_]*)\s*=")
_PROSE_SECTION_KEY = re.compile(r"^\[([a-z_.]+)\](?:\s+([a-z_][a-z0-9_]*))?")
_PROSE_DOTTED = re.compile(r"^([a-z_]+(?:\.[a-z_]+)+)(?:\s*=.*)?$")
# `vault.sock`, `gateway.log`: files named like a section and a key.
_FILE_SUFFIXES = frozenset({"sock", "log", "jsonl", "json", "py", "db", "toml", "secret", "key", "service"})


# --- reading the README ----------------------------------------------------------------------


def split_code(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(language, body) of every fenced block, and every inline code span outside them."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    prose = _FENCE.sub("", text)
    spans = [" ".join(m.group(1).split()) for m in _SPAN.finditer(prose)]  # a span may wrap lines
    return blocks, spans


def named_commands(text: str) -> list[list[str]]:
    """The words after `clawgate` wherever the README shows it as a command."""
    blocks, spans = split_code(text)
    places = spans + [body for lang, body in blocks if lang not in ("toml", "json", "yaml")]
    found = []
    for place in places:
        for match in _COMMAND.finditer(place):
            words = match.group(1).split()
            if words:  # `clawgate: warning: …` is a log line, not a command
                found.append(words)
    return found


def _toml_path(header: str) -> Path_:
    """`wallet.policy.token_limits."usdc.testnet"` → ("wallet", "policy", "token_limits", "usdc.testnet")."""
    return tuple(part.strip().strip('"') for part in re.findall(r'"[^"]*"|[^.]+', header))


def named_config_keys(text: str) -> set[Path_]:
    """Every config key path the README names, as written (table keys not yet generalized)."""
    blocks, spans = split_code(text)
    named: set[Path_] = set()
    for lang, body in blocks:
        if lang != "toml":
            continue
        section: Path_ = ()
        for line in body.splitlines():
            if header := _TOML_HEADER.match(line):
                section = _toml_path(header.group(1))
                named.add(section)
            elif key := _TOML_KEY.match(line):
                named.add((*section, key.group(1)))
    for span in spans:
        if match := _PROSE_SECTION_KEY.match(span):
            section = _toml_path(match.group(1))
            named.add(section if match.group(2) is None else (*section, match.group(2)))
        elif (match := _PROSE_DOTTED.match(span)) and match.group(1).split(".")[-1] not in _FILE_SUFFIXES:
            path = tuple(match.group(1).split("."))
            if path[0] in Config.model_fields:  # `gateway.approvals.…` is a module, not a key
                named.add(path)
    return named


# --- the code --------------------------------------------------------------------------------


def cli_commands(group: click.Group = cli_main, prefix: Path_ = ()) -> set[Path_]:
    """Every runnable command of the click tree, as the words a user types after `clawgate`."""
    found: set[Path_] = set()
    for name, command in group.commands.items():
        if command.hidden:
            continue
        if isinstance(command, click.Group):
            found |= cli_commands(command, (*prefix, name))
        else:
            found.add((*prefix, name))
    return found


def resolve_command(words: list[str], group: click.Group = cli_main) -> Path_ | None:
    """The command path the words name (arguments after a leaf are ignored), or None if unknown."""
    command: click.Command = group
    path: list[str] = []
    for word in words:
        if not isinstance(command, click.Group):
            break  # the rest are the leaf's arguments
        sub = command.commands.get(word)
        if sub is None:
            return None
        path.append(word)
        command = sub
    return tuple(path)


def _unwrap(annotation: object) -> object:
    """`X | None` → X."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    if typing.get_origin(annotation) is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return annotation


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _child(annotation: object) -> tuple[str, object]:
    """How a field's value is entered: "model" (a section), "table" (user keys → X), "items" (an
    array of tables), or "leaf" (a value)."""
    annotation = _unwrap(annotation)
    if _is_model(annotation):
        return "model", annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and _is_model(_unwrap(args[1])):
        return "table", _unwrap(args[1])
    if origin is list and args and _is_model(_unwrap(args[0])):
        return "items", _unwrap(args[0])
    return "leaf", annotation


def config_keys(model: type[BaseModel] = Config, prefix: Path_ = ()) -> set[Path_]:
    """Every key a user can set: values, and tables/arrays of sections through their keys."""
    found: set[Path_] = set()
    for attr, field in model.model_fields.items():
        name = field.alias or attr  # `[budget.global]`: a keyword, so the field is `global_`
        kind, inner = _child(field.annotation)
        path = (*prefix, name)
        if kind == "model":
            found |= config_keys(inner, path)  # type: ignore[arg-type]
        elif kind == "table":
            found |= config_keys(inner, (*path, ANY_KEY))  # type: ignore[arg-type]
        elif kind == "items":
            found |= config_keys(inner, path)  # type: ignore[arg-type]
        else:
            found.add(path)
    return found


def resolve_key(path: Path_, model: type[BaseModel] = Config) -> Path_ | None:
    """The key path in `config_keys` form (user table keys become `*`), or None if no such key.

    A section or a table is a valid name too; a user key inside a table of plain values
    (`[vault.egress] team = […]`) names the table itself.
    """
    resolved: list[str] = []
    current: object = model
    rest = list(path)
    while rest:
        if not _is_model(current):
            return None  # a key below a plain value
        name = rest.pop(0)
        fields = current.model_fields  # type: ignore[attr-defined]
        field = next((f for a, f in fields.items() if (f.alias or a) == name), None)
        if field is None:
            return None
        resolved.append(name)
        kind, inner = _child(field.annotation)
        if kind == "table":
            if rest:
                rest.pop(0)
                resolved.append(ANY_KEY)
        elif kind == "leaf" and typing.get_origin(inner) is dict:
            return tuple(resolved) if len(rest) <= 1 else None
        current = inner
    return tuple(resolved)


# --- the checks ------------------------------------------------------------------------------


def command_problems(text: str) -> list[str]:
    problems = []
    named: set[Path_] = set()
    for words in named_commands(text):
        path = resolve_command(words)
        if path is None:
            problems.append(f"README names `clawgate {' '.join(words)}`, which the CLI does not have")
        else:
            named.add(path)
    for path in sorted(cli_commands() - named):
        problems.append(f"`clawgate {' '.join(path)}` exists but the README never names it")
    return problems


def config_problems(text: str) -> list[str]:
    problems = []
    named: set[Path_] = set()
    for path in sorted(named_config_keys(text)):
        resolved = resolve_key(path)
        if resolved is None:
            problems.append(f"README names config key {'.'.join(path)}, which the config models do not have")
        else:
            named.add(resolved)
    for path in sorted(config_keys() - named):
        problems.append(f"config key {'.'.join(path)} exists but the README never names it")
    return problems


def _leaf(path: Path_) -> click.Command:
    command: click.Command = cli_main
    for word in path:
        assert isinstance(command, click.Group)
        command = command.commands[word]
    return command


def option_problems(text: str) -> list[str]:
    """An option the README shows after a command (`clawgate usage --since 7d`) that the command
    does not take: the user's first try ends in "No such option". Only the rest of the line up
    to a pipe, `;`, `&&`, a comment or the next `clawgate` belongs to the command."""
    blocks, spans = split_code(text)
    places = spans + [body for lang, body in blocks if lang not in ("toml", "json", "yaml")]
    problems = []
    for place in places:
        for line in place.splitlines():
            for match in _COMMAND.finditer(line):
                path = resolve_command(match.group(1).split()) if match.group(1).split() else None
                if not path:
                    continue
                rest = re.split(r"\||;|&&|#|\bclawgate\b", line[match.end() :])[0]
                shown = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest))
                takes = {o for p in _leaf(path).params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
                for option in sorted(shown - takes):
                    problems.append(
                        f"README shows `clawgate {' '.join(path)} {option}`, which it does not take"
                    )
    return problems


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_every_cli_command_is_in_the_readme_and_every_readme_command_exists(readme: str) -> None:
    assert command_problems(readme) == []


def test_every_option_the_readme_shows_the_command_takes(readme: str) -> None:
    assert option_problems(readme) == []


def test_a_readme_option_the_command_lacks_is_found(readme: str) -> None:
    drifted = readme + "\n`clawgate usage --group G --days 7`\n`clawgate vault log --json | jq .` \n"
    assert option_problems(drifted) == ["README shows `clawgate usage --days`, which it does not take"]


def test_every_config_key_is_in_the_readme_and_every_readme_key_exists(readme: str) -> None:
    assert config_problems(readme) == []


# --- the checks themselves fail on drift, in each direction ----------------------------------


def test_the_reading_finds_commands_and_keys_where_the_readme_puts_them(readme: str) -> None:
    commands = {resolve_command(words) for words in named_commands(readme)}
    assert {("vault", "log"), ("run",), ("groups", "mounts")} <= commands
    keys = {resolve_key(path) for path in named_config_keys(readme)}
    assert {
        ("vault", "unscoped"),  # a TOML block
        ("vault", "rate_limit", "per_host_per_minute"),  # a [section.sub] table
        ("wallet", "policy", "token_limits", ANY_KEY, "daily_limit"),  # a quoted user key
        ("wallet", "policy", "function_calls", "receiver"),  # an array of tables
        ("admin", "users"),  # prose: `admin.users`
    } <= keys


def test_a_command_missing_from_the_readme_is_found(readme: str) -> None:
    drifted = readme.replace("clawgate vault log", "clawgate vault list")
    assert "`clawgate vault log` exists but the README never names it" in command_problems(drifted)


def test_a_readme_command_the_cli_lacks_is_found(readme: str) -> None:
    drifted = readme + "\n`clawgate vault purge NAME`\n"
    assert "README names `clawgate vault purge`, which the CLI does not have" in command_problems(drifted)


def test_a_config_key_missing_from_the_readme_is_found(readme: str) -> None:
    drifted = re.sub(r"(?m)^rpc_retries = .*$", "", readme)
    assert "config key wallet.rpc_retries exists but the README never names it" in config_problems(drifted)


def test_a_readme_config_key_the_models_lack_is_found(readme: str) -> None:
    for written in ("```toml\n[vault]\nretries = 3\n```", "`[vault] retries`", "`vault.retries`"):
        problems = config_problems(readme + "\n" + written + "\n")
        assert "README names config key vault.retries, which the config models do not have" in problems


def test_every_local_file_the_readme_links_or_shows_exists(readme: str) -> None:
    """A screenshot moved or a doc renamed leaves a broken image or link on the project's front page."""
    root = README.parent
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert "docs/images/dashboard-overview.png" in local  # the dashboard's screenshot (issue 16)
    missing = [t for t in local if t and not (root / t).exists()]
    assert missing == [], missing


# --- the values the example config shows are the defaults ------------------------------------

# Keys (and sections) the README's config examples set to show what a value looks like, not
# what it defaults to.
EXAMPLE_VALUES: frozenset[Path_] = frozenset(
    {
        ("mounts", "project_root"),  # unset by default: no project mount
        ("dashboard", "enabled"),  # "turn it on": the dashboard section's example
        ("dashboard", "port"),  # shown next to enabled = true; equal to the default anyway
        ("budget", "global"),  # no limit by default; the block shows what limits look like
    }
)


def _field_at(path: Path_) -> typing.Any:
    """The pydantic field a key path names, or None when it is inside a user table or an array."""
    current: object = Config
    field = None
    for name in path:
        if not _is_model(current):
            return None
        fields = current.model_fields  # type: ignore[attr-defined]
        field = next((f for a, f in fields.items() if (f.alias or a) == name), None)
        if field is None:
            return None
        kind, inner = _child(field.annotation)
        if kind in ("table", "items"):
            return None  # `[prices."…"]`, `[[vault.policy]]`, `[budget.groups.team]`: examples
        current = inner
    return field


def shown_values(text: str) -> list[tuple[Path_, object]]:
    """(key path, value) of every uncommented `key = value` in the README's TOML blocks that
    sets a plain value of a section (not a user table, not an array of tables)."""
    shown: list[tuple[Path_, object]] = []
    blocks, _ = split_code(text)

    def walk(table: dict[str, object], prefix: Path_) -> None:
        for key, value in table.items():
            path = (*prefix, key)
            field = _field_at(path)
            if field is None:
                continue
            if isinstance(value, dict) and _is_model(_child(field.annotation)[1]):
                walk(value, path)
            else:
                shown.append((path, value))

    for lang, body in blocks:
        if lang == "toml":
            walk(tomllib.loads(body), ())
    return shown


DEFAULTS_SHOWN_UNDER = ("## Configuration", "### Model budgets")


def default_problems(text: str, sections: tuple[str, ...] = DEFAULTS_SHOWN_UNDER) -> list[str]:
    """A value the README's config shows beside a key that the model defaults to something else.

    Only the blocks that present the defaults are read: the one under "Configuration" (every key
    with its default) and the `[budget]` section of "Model budgets". Others (Slack, a local
    model) show settings a user changes, by design.
    """
    problems = []
    for heading in sections:
        start = text.index(heading)
        block = _FENCE.search(text, start)
        assert block is not None, heading
        for path, value in shown_values(block.group(0)):
            if any(path[: len(example)] == example for example in EXAMPLE_VALUES):
                continue
            field = _field_at(path)
            default = PRODUCT_DEFAULTS.get(path, field.get_default(call_default_factory=True))
            if isinstance(default, BaseModel) or value == default:
                continue
            problems.append(f"README shows {'.'.join(path)} = {value!r}; the default is {default!r}")
    return problems


def test_the_values_the_readme_config_shows_are_the_defaults(readme: str) -> None:
    assert default_problems(readme) == []


def test_a_readme_value_that_is_not_the_default_is_found(readme: str) -> None:
    checked = {path for path, _ in shown_values(readme)}
    assert {
        ("vault", "approval", "timeout_s"),
        ("groups", "max_open_sender_prompts"),
        ("budget", "warn_at"),
    } <= checked
    drifted = readme.replace("timeout_s = 120    ", "timeout_s = 300    ", 1)
    assert drifted != readme
    assert "README shows vault.approval.timeout_s = 300; the default is 120" in default_problems(drifted)
