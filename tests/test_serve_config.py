"""serve/run settings: TOML keys, CLI over file, credentials, the safe-default check."""

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.config import HostPort
from proxy64.destination import EgressChoice
from proxy64.errors import ConfigError
from proxy64.serve_config import (
    AUTH_ENV,
    CONFIG_KEYS,
    PARSERS,
    ServeSettings,
    build_settings,
    load_toml,
    parse_credentials,
)


def write(tmp_path: Path, text: str, name: str = "proxy64.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_loopback_and_safe() -> None:
    settings = build_settings({}, {}, {})
    assert settings == ServeSettings()
    assert settings.socks == HostPort(IPv4Address("127.0.0.1"), 1080)
    assert settings.http == HostPort(IPv4Address("127.0.0.1"), 8080)
    assert settings.egress is EgressChoice.AUTO and settings.nat64_prefix is None


def test_every_key_from_toml(tmp_path: Path) -> None:
    write(tmp_path, "alice:s3cret:with:colons\n# comment\n\nbob:pw\n", "users")
    path = write(
        tmp_path,
        """
socks = "[::1]:1081"
http = "off"
dns = ["127.0.0.53", "[::1]:5353"]
nat64_prefix = "2001:db8:64::/96"
egress = "embedded"
synthesize_all = true
dns64_exclude = ["::ffff:0:0/96", "2001:db8:bad::/48"]
auth_file = "users"
allow_open = false
allow_host_access = true
strict_wkp = true
max_connections = 10
max_client_connections = 5
workers = 2
log_level = "debug"
log_format = "json"
metrics = "[::1]:9464"
idle_timeout = 30
connect_timeout = 2.5
handshake_timeout = 3
shutdown_grace = 1
worker_timeout = 4
""",
    )
    values = load_toml(path)
    assert set(values) == set(CONFIG_KEYS)
    settings = build_settings(values, {}, {})
    assert settings.socks == HostPort(IPv6Address("::1"), 1081)
    assert settings.http is None
    assert [str(s) for s in settings.dns] == ["127.0.0.53:53", "[::1]:5353"]
    assert str(settings.nat64_prefix) == "2001:db8:64::/96"
    assert settings.egress is EgressChoice.EMBEDDED
    assert settings.log_format == "json"
    assert settings.metrics == HostPort(IPv6Address("::1"), 9464)
    assert settings.synthesize_all and settings.workers == 2
    assert settings.credentials == (("alice", "s3cret:with:colons"), ("bob", "pw"))
    assert (settings.idle_timeout, settings.connect_timeout) == (30.0, 2.5)
    assert settings.worker_timeout == 4.0
    assert (settings.max_connections, settings.max_client_connections) == (10, 5)
    assert settings.resolver_settings().servers == settings.dns


def test_cli_overrides_the_file(tmp_path: Path) -> None:
    values = load_toml(write(tmp_path, 'socks = "127.0.0.1:1"\negress = "nat64"\n'))
    settings = build_settings(values, {"socks": "127.0.0.1:2", "nat64_prefix": None}, {})
    assert settings.socks is not None and settings.socks.port == 2
    assert settings.egress is EgressChoice.NAT64  # from the file
    assert settings.nat64_prefix is None  # "auto" given on the command line


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("sock = '127.0.0.1:1'", ["config key 'sock'", "unknown key", "socks"]),
        ("egress = 'nat46'", ["config key 'egress'", "auto, nat64, embedded"]),
        ("workers = 0", ["config key 'workers'", "greater than zero"]),
        ("workers = 1000", ["config key 'workers'", "more than 64"]),
        ("workers = nan", ["config key 'workers'", "whole number"]),
        ("idle_timeout = inf", ["config key 'idle_timeout'", "seconds"]),
        # a healthy worker's loop may pause for a fraction of a second (a large GC pass)
        ("worker_timeout = 0.5", ["config key 'worker_timeout'", "0.5 is shorter than 1 s"]),
        ("worker_timeout = nan", ["config key 'worker_timeout'", "at least 1"]),
        ("socks = 1080", ["config key 'socks'", "HOST:PORT"]),
        ("nat64_prefix = '2001:db8::/33'", ["config key 'nat64_prefix'", "/96"]),
        ("allow_open = 'yes'", ["config key 'allow_open'", "true or false"]),
        ("log_level = 'loud'", ["config key 'log_level'", "debug, info"]),
        ("socks = [", ["not valid TOML"]),
    ],
)
def test_bad_file_value_is_one_line_naming_the_key(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_toml(write(tmp_path, text + "\n"))
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_toml(tmp_path / "nope.toml")


def test_credentials_from_env_and_never_echoed() -> None:
    settings = build_settings({}, {}, {AUTH_ENV: "carol:hunter2"})
    assert settings.credentials == (("carol", "hunter2"),)
    assert "hunter2" not in repr(settings)
    with pytest.raises(ConfigError) as info:
        parse_credentials("dave-without-colon-secret\n", "--auth-file")
    assert "line 1" in str(info.value) and "secret" not in str(info.value)
    with pytest.raises(ConfigError, match="no user:password"):
        parse_credentials("# only comments\n", "--auth-file")


def test_non_loopback_listener_needs_auth_or_allow_open() -> None:
    with pytest.raises(ConfigError) as info:
        build_settings({}, {"socks": "0.0.0.0:1080"}, {})
    assert info.value.option == "--socks" and "--allow-open" in str(info.value)
    assert build_settings({}, {"socks": "0.0.0.0:1080", "allow_open": True}, {}).allow_open
    assert build_settings({}, {"http": "[::]:3128"}, {AUTH_ENV: "u:p"}).credentials


def test_run_defaults_apply_under_file_and_cli() -> None:
    defaults = {"socks": "127.0.0.1:0", "http": "127.0.0.1:0"}
    settings = build_settings({}, {"http": "off"}, {}, defaults)
    assert settings.socks == HostPort(IPv4Address("127.0.0.1"), 0) and settings.http is None


values = st.one_of(
    st.text(max_size=30),
    st.integers(-10, 10**7),
    st.booleans(),
    st.floats(allow_nan=True),
    st.lists(st.text(max_size=10), max_size=3),
    st.none(),
)


@given(st.sampled_from(CONFIG_KEYS), values)
def test_parsers_raise_only_config_error(key: str, value: Any) -> None:
    try:
        PARSERS[key](value, key)
    except ConfigError as exc:
        assert key in str(exc)


@given(st.text(max_size=200))
def test_credentials_parser_raises_only_config_error(text: str) -> None:
    try:
        pairs = parse_credentials(text, "--auth-file")
    except ConfigError:
        return
    assert all(user and password for user, password in pairs)
