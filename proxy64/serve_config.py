"""Settings of `proxy64 serve` and `proxy64 run`: a frozen ServeSettings from TOML + CLI.

Sources, lowest to highest precedence: the defaults below, the TOML config file (stdlib
tomllib, the CLI option names with underscores), the command line. Access rules are the
exception: they add up rather than override, the command line's (--allow/--deny, in
their order) before the file's ([[rule]] tables, in theirs), so with first-match-wins a
command-line rule takes precedence over a file rule for the requests both match.
Every bad key or value raises ConfigError naming the key (or option) and the accepted
forms, so the CLI prints one line and exits 2. Credentials come from an auth file
(`user:password` lines) or the PROXY64_AUTH environment variable; they never appear in
an error message. No trio, no sockets: reading two small files is the only I/O.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address, IPv6Network
from pathlib import Path
from typing import Any

from proxy64.config import (
    HostPort,
    ResolverSettings,
    parse_dns_server,
    parse_host_port,
    parse_network6,
    parse_positive,
    parse_prefix_choice,
)
from proxy64.defaults import (
    CONNECT_TIMEOUT,
    DNS64_EXCLUDED,
    HANDSHAKE_TIMEOUT,
    HTTP_PORT,
    IDLE_TIMEOUT,
    MAX_CLIENT_CONNECTIONS,
    MAX_CONNECTIONS,
    SERVE_MAX_WORKERS,
    SHUTDOWN_GRACE,
    SOCKS_PORT,
    WORKER_TIMEOUT,
    WORKER_TIMEOUT_MIN,
)
from proxy64.destination import EgressChoice
from proxy64.errors import ConfigError
from proxy64.policy import DestinationPolicy
from proxy64.proto.rfc6052 import Nat64Prefix
from proxy64.rules import Rule, parse_rule_table

AUTH_ENV = "PROXY64_AUTH"
_LOOPBACK_SOCKS = HostPort(IPv4Address("127.0.0.1"), SOCKS_PORT)  # safe default: loopback
_LOOPBACK_HTTP = HostPort(IPv4Address("127.0.0.1"), HTTP_PORT)
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class ServeSettings:
    socks: HostPort | None = _LOOPBACK_SOCKS
    http: HostPort | None = _LOOPBACK_HTTP
    dns: tuple[HostPort, ...] = ()  # empty: the nameservers of /etc/resolv.conf
    nat64_prefix: Nat64Prefix | None = None  # None: auto (RFC 7050 discovery)
    egress: EgressChoice = EgressChoice.AUTO
    synthesize_all: bool = False
    dns64_exclude: tuple[IPv6Network, ...] = DNS64_EXCLUDED
    auth_file: Path | None = None
    allow_open: bool = False
    allow_host_access: bool = False  # a non-loopback listener may reach this host, link-local
    strict_wkp: bool = False  # refuse what a strict NAT64 refuses under 64:ff9b::/96
    max_connections: int = MAX_CONNECTIONS
    max_client_connections: int = MAX_CLIENT_CONNECTIONS  # slots one client address may hold
    workers: int = 1
    log_level: str = "info"
    log_format: str = "text"  # json: one object per line, for log shippers
    metrics: HostPort | None = None  # the Prometheus endpoint (/metrics, /healthz); None: off
    idle_timeout: float = IDLE_TIMEOUT
    connect_timeout: float = CONNECT_TIMEOUT
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    shutdown_grace: float = SHUTDOWN_GRACE
    worker_timeout: float = WORKER_TIMEOUT  # --workers: a worker silent this long is killed
    rules: tuple[Rule, ...] = ()  # access rules: the command line's, then the file's
    # username → password, as (user, password) pairs; empty: no authentication
    credentials: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def resolver_settings(self) -> ResolverSettings:
        return ResolverSettings(
            servers=self.dns,
            prefix=self.nat64_prefix,
            synthesize_all=self.synthesize_all,
            excluded=self.dns64_exclude,
        )

    def listeners(self) -> tuple[HostPort, ...]:
        return tuple(hp for hp in (self.socks, self.http) if hp is not None)

    def destination_policy(self) -> DestinationPolicy:
        """A listener beyond loopback does not open this host to its clients, unless
        allow_host_access says so (proxy64/policy.py)."""
        shared = any(not listener.is_loopback for listener in self.listeners())
        return DestinationPolicy(
            protect_host=shared and not self.allow_host_access,
            strict_wkp=self.strict_wkp,
            rules=self.rules,
        )


# --- value parsers: (value from TOML or CLI, option name) -> typed value ------------------


def _text(value: object, option: str, forms: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(option, f"{value!r} is not a string; expected {forms}")
    return value


def _listener(default_port: int) -> Callable[[object, str], HostPort | None]:
    def parse(value: object, option: str) -> HostPort | None:
        if value is None or isinstance(value, HostPort):
            return value
        text = _text(value, option, "HOST:PORT, [IPv6]:PORT or off")
        if text.strip().lower() == "off":
            return None
        return parse_host_port(text, option, default_port=default_port)

    return parse


def _dns(value: object, option: str) -> tuple[HostPort, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    out: list[HostPort] = []
    for item in items:
        if isinstance(item, HostPort):
            out.append(item)
        else:
            text = _text(item, option, "HOST[:PORT] or a list of them")
            out.append(parse_dns_server(text, option))
    return tuple(out)


def _prefix(value: object, option: str) -> Nat64Prefix | None:
    if value is None or isinstance(value, Nat64Prefix):
        return value
    return parse_prefix_choice(_text(value, option, "a NAT64 prefix or auto"), option)


def parse_egress(value: object, option: str = "--egress") -> EgressChoice:
    if isinstance(value, EgressChoice):
        return value
    text = _text(value, option, "auto, nat64 or embedded").strip().lower()
    try:
        return EgressChoice(text)
    except ValueError:
        raise ConfigError(option, f"{value!r} is not one of auto, nat64, embedded") from None


def _bool(value: object, option: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(option, f"{value!r} is not true or false")
    return value


def _path(value: object, option: str) -> Path | None:
    if value is None or isinstance(value, Path):
        return value
    return Path(_text(value, option, "a file path"))


def _finite(value: object, option: str, kind: str) -> float:
    """A positive finite number (NaN and infinity are refused, not crashed on)."""
    if isinstance(value, bool) or not math.isfinite(_as_float(value)):
        raise ConfigError(option, f"{value!r} is not {kind}")
    return parse_positive(str(value), option, integer=kind.startswith("a whole"))


def _as_float(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0  # parse_positive names the problem


def _count(upper: int) -> Callable[[object, str], int]:
    def parse(value: object, option: str) -> int:
        number = int(_finite(value, option, f"a whole number from 1 to {upper}"))
        if number > upper:
            raise ConfigError(option, f"{value!r} is more than {upper}")
        return number

    return parse


def _seconds(value: object, option: str) -> float:
    return _finite(value, option, "a number of seconds greater than zero")


def _seconds_from(lowest: float) -> Callable[[object, str], float]:
    def parse(value: object, option: str) -> float:
        number = _finite(value, option, f"a number of seconds, at least {lowest:g}")
        if number < lowest:
            raise ConfigError(option, f"{value!r} is shorter than {lowest:g} s")
        return number

    return parse


def _log_level(value: object, option: str) -> str:
    text = _text(value, option, ", ".join(LOG_LEVELS)).strip().lower()
    if text not in LOG_LEVELS:
        raise ConfigError(option, f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return text


def _log_format(value: object, option: str) -> str:
    text = _text(value, option, " or ".join(LOG_FORMATS)).strip().lower()
    if text not in LOG_FORMATS:
        raise ConfigError(option, f"{value!r} is not one of {', '.join(LOG_FORMATS)}")
    return text


def parse_metrics_address(value: object, option: str = "--metrics") -> HostPort | None:
    """HOST:PORT or [IPv6]:PORT of the metrics endpoint (port 0: a free port), or off."""
    if value is None or isinstance(value, HostPort):
        return value
    text = _text(value, option, "HOST:PORT, [IPv6]:PORT or off")
    if text.strip().lower() == "off":
        return None
    return parse_host_port(text, option)


def _networks(value: object, option: str) -> tuple[IPv6Network, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(
        item
        if isinstance(item, IPv6Network)
        else parse_network6(_text(item, option, "an IPv6 network"), option)
        for item in items
    )


PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "socks": _listener(SOCKS_PORT),
    "http": _listener(HTTP_PORT),
    "dns": _dns,
    "nat64_prefix": _prefix,
    "egress": parse_egress,
    "synthesize_all": _bool,
    "dns64_exclude": _networks,
    "auth_file": _path,
    "allow_open": _bool,
    "allow_host_access": _bool,
    "strict_wkp": _bool,
    "max_connections": _count(1_000_000),
    "max_client_connections": _count(1_000_000),
    "workers": _count(SERVE_MAX_WORKERS),
    "log_level": _log_level,
    "log_format": _log_format,
    "metrics": parse_metrics_address,
    "idle_timeout": _seconds,
    "connect_timeout": _seconds,
    "handshake_timeout": _seconds,
    "shutdown_grace": _seconds,
    "worker_timeout": _seconds_from(WORKER_TIMEOUT_MIN),
}
CONFIG_KEYS = tuple(PARSERS)
RULE_KEY = "rule"  # [[rule]] tables: read by load_toml with their line numbers
_RULE_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*rule[ \t]*\]\]", re.MULTILINE)


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file; unknown keys and bad values raise ConfigError."""
    option = f"--config {path}"
    try:
        text = path.read_bytes().decode("utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(option, f"cannot read the file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(option, f"not valid TOML: not UTF-8 ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(option, f"not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == RULE_KEY:
            values["rules"] = load_rules(value, path, text)
            continue
        if key not in PARSERS:
            raise ConfigError(
                f"config key {key!r}",
                f"unknown key; accepted keys: {', '.join(CONFIG_KEYS)}, [[{RULE_KEY}]]",
            )
        values[key] = PARSERS[key](value, f"config key {key!r}")
    if isinstance(values.get("auth_file"), Path) and not values["auth_file"].is_absolute():
        values["auth_file"] = path.parent / values["auth_file"]  # relative to the config file
    return values


def load_rules(value: object, path: Path, text: str) -> tuple[Rule, ...]:
    """The [[rule]] tables of a config file, each named by its line (found by its
    header: tomllib gives no positions) so an error and a log line can point at it."""
    option = f"--config {path}"
    if not isinstance(value, list):
        raise ConfigError(option, "rule must be an array of tables: write [[rule]] headers")
    lines = [text.count("\n", 0, m.start()) + 1 for m in _RULE_HEADER.finditer(text)]
    rules: list[Rule] = []
    for index, table in enumerate(value):
        # an inline array (rule = [{...}]) has no headers: its tables are named by index
        line = lines[index] if len(lines) == len(value) else None
        where = f"line {line}" if line is not None else f"rule {index + 1}"
        try:
            rules.append(parse_rule_table(table, f"{path} {where}"))
        except ConfigError as exc:
            raise ConfigError(option, f"{where}: [[rule]]: {exc.problem}") from None
    return tuple(rules)


def parse_credentials(text: str, option: str) -> tuple[tuple[str, str], ...]:
    """`user:password` lines; blank lines and '#' comments ignored. Never echoes a line."""
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ConfigError(option, f"line {number} is not user:password")
        if len(user.encode()) > 255 or len(password.encode()) > 255:
            raise ConfigError(
                option, f"line {number}: user and password are limited to 255 bytes (RFC 1929)"
            )
        out[user] = password
    if not out:
        raise ConfigError(option, "no user:password line found")
    return tuple(out.items())


def build_settings(
    file_values: Mapping[str, Any],
    cli_values: Mapping[str, Any],
    environ: Mapping[str, str],
    defaults: Mapping[str, Any] | None = None,
) -> ServeSettings:
    """Merge defaults < config file < command line; cli_values holds only given options."""
    merged: dict[str, Any] = {}
    for key, value in (defaults or {}).items():
        merged[key] = PARSERS[key](value, f"default {key}")
    merged.update(file_values)
    for key, value in cli_values.items():
        if key == "rules":
            continue  # added up below, not overridden
        merged[key] = PARSERS[key](value, "--" + key.replace("_", "-"))
    merged["rules"] = tuple(cli_values.get("rules", ())) + tuple(file_values.get("rules", ()))
    credentials: tuple[tuple[str, str], ...] = ()
    auth_file = merged.get("auth_file")
    if isinstance(auth_file, Path):
        try:
            text = auth_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("--auth-file", f"cannot read {auth_file}: {exc.strerror}") from None
        credentials = parse_credentials(text, "--auth-file")
    elif environ.get(AUTH_ENV):
        credentials = parse_credentials(environ[AUTH_ENV], AUTH_ENV)
    known = {f.name for f in fields(ServeSettings)}
    settings = ServeSettings(
        **{k: v for k, v in merged.items() if k in known}, credentials=credentials
    )
    if not settings.listeners():
        raise ConfigError(
            "--socks/--http", "both listeners are off, nothing to serve; give one an address"
        )
    check_safety(settings)
    return settings


def check_safety(settings: ServeSettings) -> None:
    """Safe default: a listener reachable from other hosts needs authentication (the
    metrics endpoint too: it asks for the same credentials)."""
    if settings.credentials or settings.allow_open:
        return
    for option, listener in (
        ("--socks", settings.socks),
        ("--http", settings.http),
        ("--metrics", settings.metrics),
    ):
        if listener is not None and not listener.is_loopback:
            could = "read its metrics" if option == "--metrics" else "use this proxy"
            raise ConfigError(
                option,
                f"refusing to listen on {listener} without authentication: anyone who can "
                f"reach it could {could}; add --auth-file FILE (or PROXY64_AUTH), or "
                "--allow-open if that is what you want",
            )
