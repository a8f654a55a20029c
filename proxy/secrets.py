"""Encrypted store for the credentials the vault injects into outgoing requests.

Real credentials must never enter a sandbox container, so they live only here, in the
config dir (never mounted anywhere), encrypted with AES-256-GCM under a local master key.
The secret's name is the GCM associated data: a ciphertext copied onto another record
(e.g. to make the vault send the OpenAI key to an attacker-chosen host) fails to decrypt.

Writers (the CLI, possibly several at once) serialize on an fcntl lock file and replace
`secrets.json` atomically, so a crash or a concurrent `vault add` never leaves a torn file.
Error messages never contain a secret value.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import ipaddress
import json
import re
import secrets as _random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.private_files import (
    MASTER_KEY_FILE,
    PrivateFileError,
    atomic_write,
    exclusive_lock,
    read_master_key,
)
from proxy.rules import Rule, RuleError, make_rule

SECRETS_FILE = "secrets.json"
LOCK_FILE = "secrets.lock"
USAGE_FILE = "secrets-usage.json"  # last-used timestamps, written by the vault process
NONCE_BYTES = 12
FORMAT_VERSION = 2  # v2 adds "rules" and "groups"; v1 records still load

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# RFC 9110 `token`: what a header field name may consist of.
_HEADER_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_GROUP_RE = re.compile(r"^(\*|[A-Za-z0-9_.-]{1,64})$")
DEFAULT_GROUPS = ("main",)


class VaultError(Exception):
    """A user-facing vault problem. The message never contains a secret value."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class SecretInfo:
    """Everything about a secret except its value (safe to print and log)."""

    name: str
    host: str
    header: str
    format: str
    created_at: str
    rules: tuple[Rule, ...] = ()  # empty: one set_header rule from host/header/format (v1)
    groups: tuple[str, ...] = DEFAULT_GROUPS  # groups that may use it; "*" = every group
    last_used: str = ""

    @property
    def effective_rules(self) -> tuple[Rule, ...]:
        if self.rules:
            return self.rules
        return (Rule(host=self.host, action="set_header", header=self.header, format=self.format),)

    def allows(self, group: str | None) -> bool:
        return group is not None and ("*" in self.groups or group in self.groups)


# --- validation -------------------------------------------------------------------------------


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise VaultError(f"invalid secret name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -")
    return name


def _valid_hostname(host: str) -> bool:
    if len(host) > 253:
        return False
    with contextlib.suppress(ValueError):
        ipaddress.IPv4Address(host)
        return True
    labels = host.split(".")
    if all(label.isdigit() for label in labels):
        return False  # looks like a malformed IPv4 literal
    return all(_LABEL_RE.fullmatch(label) for label in labels)


def normalize_host(host: str) -> str:
    """Lowercase `host`, `host:port`, `1.2.3.4[:port]` or `[v6]:port`; raise VaultError otherwise."""
    if not isinstance(host, str) or not host or host != host.strip():
        raise VaultError(f"invalid host {host!r}: expected a hostname or host:port")
    h = host.lower()
    port: str | None = None
    if h.startswith("["):
        end = h.find("]")
        if end < 0:
            raise VaultError(f"invalid host {host!r}: unterminated IPv6 literal")
        literal, rest = h[1:end], h[end + 1 :]
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise VaultError(f"invalid host {host!r}: bad IPv6 literal") from None
        if rest:
            if not rest.startswith(":"):
                raise VaultError(f"invalid host {host!r}: expected [ipv6]:port")
            port = rest[1:]
        name = f"[{literal}]"
    else:
        name, sep, port_part = h.partition(":")
        if sep:
            port = port_part
        if name.endswith(".") and not name.endswith(".."):
            name = name[:-1]  # FQDN form "example.com." is the same host
        if not _valid_hostname(name):
            raise VaultError(f"invalid host {host!r}: expected a hostname or host:port")
    if port is not None:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise VaultError(f"invalid host {host!r}: port must be 1-65535")
        return f"{name}:{int(port)}"
    return name


def validate_header(header: str) -> str:
    if not isinstance(header, str) or not _HEADER_RE.fullmatch(header):
        raise VaultError(f"invalid header name {header!r}: must be an HTTP token like x-api-key")
    return header


def validate_format(fmt: str) -> str:
    if not isinstance(fmt, str) or fmt.count("{value}") != 1:
        raise VaultError("invalid format: it must contain {value} exactly once, e.g. 'Bearer {value}'")
    rest = fmt.replace("{value}", "")
    if "{" in rest or "}" in rest:
        raise VaultError("invalid format: braces other than {value} are not allowed")
    if any(c in rest for c in "\r\n\0"):
        raise VaultError("invalid format: control characters are not allowed")
    return fmt


def validate_groups(groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(g.strip() for g in groups if g.strip()))
    if not out:
        raise VaultError("at least one group is needed (use '*' for every group)")
    for g in out:
        if not _GROUP_RE.fullmatch(g):
            raise VaultError(f"invalid group {g!r}: use a group folder name or '*'")
    return out


def validate_value(value: str) -> str:
    # Never echo the value back: the message only says what is wrong with it.
    if not isinstance(value, str) or value == "":
        raise VaultError("the secret value is empty")
    if any(c in value for c in "\r\n\0"):
        raise VaultError("the secret value must not contain a newline or NUL character")
    return value


# --- store ------------------------------------------------------------------------------------


# One secret as stored in the JSON file: str fields plus optional "groups" and "rules" lists.
_Record = dict[str, Any]


class SecretStore:
    """The encrypted secrets file plus its master key, both inside `config_dir`."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = Path(config_dir)
        self.key_path = self.config_dir / MASTER_KEY_FILE
        self.secrets_path = self.config_dir / SECRETS_FILE
        self.lock_path = self.config_dir / LOCK_FILE

    # -- public API --

    def add(
        self,
        name: str,
        value: str,
        host: str | None = None,
        header: str = "Authorization",
        fmt: str = "Bearer {value}",
        replace: bool = False,
        rules: list[Rule] | None = None,
        groups: list[str] | tuple[str, ...] = DEFAULT_GROUPS,
    ) -> SecretInfo:
        """Encrypt and store a secret; refuse to overwrite an existing name unless `replace`.

        Without `rules`, the secret gets one rule: set `header` = `fmt` on requests to `host`.
        """
        validate_name(name)
        groups = validate_groups(groups)
        if rules:
            first = rules[0]
            host, header, fmt = first.host, first.header or "", first.format
        else:
            if host is None:
                raise VaultError("a host (or at least one rule) is required")
            host = normalize_host(host)
            validate_header(header)
            validate_format(fmt)
            try:  # validate as a rule, but store in the v1 form (rules=() -> derived)
                make_rule(host, action="set_header", header=header, fmt=fmt)
            except RuleError as e:
                raise VaultError(str(e)) from None
            rules = []
        validate_value(value)
        with self._locked():
            aead = AESGCM(self._master_key(create=True))
            records = self._read_records()
            existing = [r for r in records if r["name"] == name]
            if existing and not replace:
                raise VaultError(f"secret {name!r} already exists (use --replace to overwrite it)")
            nonce = _random.token_bytes(NONCE_BYTES)
            ciphertext = aead.encrypt(nonce, value.encode("utf-8"), name.encode("utf-8"))
            info = SecretInfo(
                name=name,
                host=host,
                header=header,
                format=fmt,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                rules=tuple(rules),
                groups=groups,
            )
            record: _Record = {
                "name": info.name,
                "host": info.host,
                "header": info.header,
                "format": info.format,
                "created_at": info.created_at,
                "nonce": base64.b64encode(nonce).decode("ascii"),
                "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
            }
            if info.groups != DEFAULT_GROUPS:
                record["groups"] = list(info.groups)
            if info.rules:
                record["rules"] = [r.to_dict() for r in info.rules]
            records = [r for r in records if r["name"] != name] + [record]
            self._write_records(records)
        return info

    def list(self) -> list[SecretInfo]:
        """Metadata of every stored secret, sorted by name; values are not decrypted."""
        usage = self.usage()
        infos = (self._info(r, usage.get(str(r.get("name")), "")) for r in self._read_records())
        return sorted(infos, key=lambda i: i.name)

    def get(self, name: str) -> SecretInfo | None:
        """Metadata of one secret (never its value), or None."""
        validate_name(name)
        return next((i for i in self.list() if i.name == name), None)

    def rotate(self, name: str, value: str) -> SecretInfo:
        """Replace a secret's value, keeping its rules and groups."""
        validate_name(name)
        validate_value(value)
        with self._locked():
            aead = AESGCM(self._master_key(create=True))
            records = self._read_records()
            record = next((r for r in records if r.get("name") == name), None)
            if record is None:
                raise VaultError(f"no secret named {name!r}")
            nonce = _random.token_bytes(NONCE_BYTES)
            ciphertext = aead.encrypt(nonce, value.encode("utf-8"), name.encode("utf-8"))
            record["nonce"] = base64.b64encode(nonce).decode("ascii")
            record["ciphertext"] = base64.b64encode(ciphertext).decode("ascii")
            record["rotated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            self._write_records(records)
        return self._info(record)

    def set_groups(self, name: str, groups: builtins.list[str] | tuple[str, ...]) -> SecretInfo:
        """Change which groups may use NAME, keeping its value and rules (no re-entry of the value)."""
        validate_name(name)
        groups = validate_groups(groups)
        with self._locked():
            records = self._read_records()
            record = next((r for r in records if r.get("name") == name), None)
            if record is None:
                raise VaultError(f"no secret named {name!r}")
            record.pop("groups", None)
            if groups != DEFAULT_GROUPS:
                record["groups"] = list(groups)
            self._write_records(records)
        return self._info(record)

    def usage(self) -> dict[str, str]:
        """name -> ISO timestamp of the last request it was injected into (best effort)."""
        try:
            doc = json.loads((self.config_dir / USAGE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict):
            return {}
        return {str(k): str(v) for k, v in doc.items()}

    def record_usage(self, used: dict[str, str]) -> None:
        """Merge last-used timestamps (the vault calls this in batches, not per request)."""
        if not used:
            return
        with self._locked():
            merged = self.usage() | used
            self._atomic_write(self.config_dir / USAGE_FILE, json.dumps(merged, indent=2).encode())

    def remove(self, name: str) -> bool:
        """Delete a secret; False if there was none with that name."""
        validate_name(name)
        with self._locked():
            records = self._read_records()
            kept = [r for r in records if r["name"] != name]
            if len(kept) == len(records):
                return False
            self._write_records(kept)
        return True

    def load_all(self) -> builtins.list[tuple[SecretInfo, str]]:
        """Decrypt everything. Only the vault process calls this; nobody else needs values."""
        records = self._read_records()
        if not records:
            return []
        aead = AESGCM(self._master_key(create=False))
        out: builtins.list[tuple[SecretInfo, str]] = []
        for r in records:
            info = self._info(r)
            try:
                nonce = base64.b64decode(r["nonce"], validate=True)
                ciphertext = base64.b64decode(r["ciphertext"], validate=True)
                plain = aead.decrypt(nonce, ciphertext, info.name.encode("utf-8"))
            except (InvalidTag, ValueError, TypeError, KeyError):
                raise VaultError(
                    f"secret {info.name!r} cannot be decrypted (wrong master key or tampered record);"
                    f" re-add it with `clawgate vault add {info.name} --replace`"
                ) from None
            out.append((info, plain.decode("utf-8")))
        return out

    # -- internals --

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive cross-process lock around read-modify-write of the store."""
        with exclusive_lock(self.lock_path):
            yield

    def _master_key(self, create: bool) -> bytes:
        try:
            return read_master_key(self.key_path, create=create)
        except PrivateFileError as e:
            raise VaultError(str(e)) from None

    def _read_records(self) -> builtins.list[_Record]:
        try:
            raw = self.secrets_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            doc = json.loads(raw)
            records = doc["secrets"]
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise VaultError(f"{self.secrets_path} is corrupt (not a clawgate secrets file)") from None
        return records

    def _write_records(self, records: builtins.list[_Record]) -> None:
        data = json.dumps({"version": FORMAT_VERSION, "secrets": records}, indent=2).encode("utf-8")
        self._atomic_write(self.secrets_path, data)

    def _atomic_write(self, path: Path, data: bytes) -> None:
        atomic_write(path, data)

    @staticmethod
    def _info(r: _Record, last_used: str = "") -> SecretInfo:
        try:
            rules = tuple(Rule.from_dict(d) for d in r.get("rules", []))
            groups = tuple(str(g) for g in r.get("groups", DEFAULT_GROUPS))
            return SecretInfo(
                name=str(r["name"]),
                host=str(r["host"]),
                header=str(r["header"]),
                format=str(r["format"]),
                created_at=str(r.get("created_at", "")),
                rules=rules,
                groups=groups,
                last_used=last_used,
            )
        except KeyError as e:
            raise VaultError(f"secrets file has a record without {e.args[0]!r}") from None
        except (RuleError, TypeError, ValueError) as e:
            raise VaultError(f"secret {r.get('name')!r} has an invalid rule: {e}") from None
