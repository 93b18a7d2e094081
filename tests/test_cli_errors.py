"""Bad input on the command line or in a config file: one line naming the option, exit 2.

Every case runs proxy64.cli.main in-process and stops before anything is served (each
input is refused while parsing), so the table is fast and needs no network.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy64.cli import _command_parser, build_parser
from proxy64.errors import ConfigError
from proxy64.serve_config import build_settings, load_toml
from tests.helpers.cli import run_cli

# (argv, the one line the user reads; {tmp} is replaced by the test's directory)
CASES: list[tuple[list[str], str]] = [
    (["--bogus"], "proxy64: error: unrecognized arguments: --bogus (see proxy64 --help)"),
    (["nosuch"], "proxy64: error: argument COMMAND: invalid choice: 'nosuch' "),
    (
        ["serve", "--bogus"],
        "proxy64 serve: error: unrecognized arguments: --bogus (see proxy64 serve --help)",
    ),
    (
        ["tun", "serve", "--fd", "3", "--bogus"],
        "proxy64 tun serve: error: unrecognized arguments: --bogus",
    ),
    (["serve", "--socks"], "proxy64 serve: error: argument --socks: expected one argument"),
    (
        ["serve", "--socks", "127.0.0.1:99999"],
        "proxy64 serve: error: --socks: '99999' is not a port number (0-65535)",
    ),
    (
        ["serve", "--http", "300.1.1.1:80"],
        "proxy64 serve: error: --http: '300.1.1.1:80': '300.1.1.1' is not an IP address; "
        "expected HOST:PORT or [IPv6]:PORT (port optional)",
    ),
    (["serve", "--socks", "[::1"], "proxy64 serve: error: --socks: '[::1' has no closing ']'"),
    (
        ["serve", "--socks", "0.0.0.0:1080"],
        "proxy64 serve: error: --socks: refusing to listen on 0.0.0.0:1080 without authentication",
    ),
    (
        ["serve", "--socks", "off", "--http", "off"],
        "proxy64 serve: error: --socks/--http: both listeners are off, nothing to serve",
    ),
    (
        ["serve", "--nat64-prefix", "2001:db8::/33"],
        "proxy64 serve: error: argument --nat64-prefix: NAT64 prefix 2001:db8::/33 has length "
        "/33; RFC 6052 §2.2 allows only /32, /40, /48, /56, /64 or /96",
    ),
    (
        ["serve", "--nat64-prefix", "2001:db8::1/96"],
        "proxy64 serve: error: argument --nat64-prefix: 2001:db8::1/96 has bits set after the "
        "prefix length",
    ),
    (
        ["serve", "--nat64-prefix", "2001:db8:0:0:ff00::/64"],
        "proxy64 serve: error: argument --nat64-prefix: NAT64 prefix 2001:db8:0:0:ff00::/64 "
        "sets bits 64-71 (the u octet)",
    ),
    (
        ["serve", "--nat64-prefix", "garbage"],
        "proxy64 serve: error: argument --nat64-prefix: 'garbage' is not an IPv6 prefix",
    ),
    (
        ["serve", "--egress", "foo"],
        "proxy64 serve: error: --egress: 'foo' is not one of auto, nat64, embedded",
    ),
    (
        ["serve", "--workers", "0"],
        "proxy64 serve: error: --workers: '0' is not a whole number greater than zero",
    ),
    (["serve", "--socks", "127.0.0.1:+80"], "proxy64 serve: error: --socks: '+80' is not a port"),
    (["serve", "--workers", "1e1"], "proxy64 serve: error: --workers: '1e1' is not a whole number"),
    (["resolve", ""], "proxy64 resolve: error: argument NAME: an empty name"),
    (["serve", "--workers", "100000"], "proxy64 serve: error: --workers: '100000' is more than"),
    (
        ["serve", "--max-connections", "1.5"],
        "proxy64 serve: error: --max-connections: '1.5' is not a whole number greater than zero",
    ),
    (
        ["serve", "--max-client-connections", "0"],
        "proxy64 serve: error: --max-client-connections: '0' is not a whole number greater than"
        " zero",
    ),
    (
        ["serve", "--idle-timeout", "-1"],
        "proxy64 serve: error: --idle-timeout: '-1' is not a number greater than zero",
    ),
    (
        ["serve", "--connect-timeout", "nan"],
        "proxy64 serve: error: --connect-timeout: 'nan' is not a number of seconds greater "
        "than zero",
    ),
    (
        ["serve", "--dns", "garbage"],
        "proxy64 serve: error: argument --dns: 'garbage': 'garbage' is not an IP address",
    ),
    (
        ["serve", "--dns", "127.0.0.1:0"],
        "proxy64 serve: error: argument --dns: '127.0.0.1:0': a DNS server needs a port",
    ),
    (
        ["serve", "--dns64-exclude", "foo"],
        "proxy64 serve: error: argument --dns64-exclude: 'foo' is not an IPv6 network",
    ),
    (
        ["serve", "--log-level", "loud"],
        "proxy64 serve: error: argument --log-level: invalid choice: 'loud'",
    ),
    (
        ["serve", "--auth-file", "{tmp}/missing"],
        "proxy64 serve: error: --auth-file: cannot read {tmp}/missing: No such file or directory",
    ),
    (["serve", "--auth-file", "{tmp}/empty"], "proxy64 serve: error: --auth-file: no user:"),
    (
        ["serve", "--auth-file", "{tmp}/badauth"],
        "proxy64 serve: error: --auth-file: line 1 is not user:password",
    ),
    (
        ["serve", "--config", "{tmp}/missing"],
        "proxy64 serve: error: --config {tmp}/missing: cannot read the file: No such file",
    ),
    (
        ["serve", "--config", "{tmp}"],
        "proxy64 serve: error: --config {tmp}: cannot read the file: Is a directory",
    ),
    (
        ["serve", "--config", "{tmp}/syntax.toml"],
        "proxy64 serve: error: --config {tmp}/syntax.toml: not valid TOML: Invalid value (at "
        "line 1, column 9)",
    ),
    (
        ["serve", "--config", "{tmp}/type.toml"],
        "proxy64 serve: error: config key 'workers': 'two' is not a whole number greater than zero",
    ),
    (
        ["serve", "--config", "{tmp}/unknown.toml"],
        "proxy64 serve: error: config key 'bogus': unknown key; accepted keys: socks, http,",
    ),
    (
        ["serve", "--config", "{tmp}/listen.toml"],
        "proxy64 serve: error: config key 'socks': 1080 is not a string; expected HOST:PORT",
    ),
    (
        ["run"],
        "proxy64 run: error: CMD: no command given; usage: proxy64 run [options] -- CMD [ARGS]",
    ),
    (["run", "--"], "proxy64 run: error: CMD: no command given"),
    (
        ["run", "--workers", "2", "--", "true"],
        "proxy64 run: error: --workers: proxy64 run serves one command from one process",
    ),
    (["run", "--socks", "1.2.3.4.5", "--", "true"], "proxy64 run: error: --socks: '1.2.3.4.5'"),
    (
        ["run", "--report", "{tmp}/no/r.json", "--", "true"],
        "proxy64 run: error: argument --report: cannot write {tmp}/no/r.json: the directory "
        "{tmp}/no does not exist",
    ),
    (
        ["tun", "run", "--report", "{tmp}", "--", "true"],
        "proxy64 tun run: error: argument --report: {tmp} is a directory",
    ),
    (["tun"], "proxy64 tun: error: the following arguments are required: run|serve"),
    (
        ["tun", "run"],
        "proxy64 tun run: error: CMD: no command given; usage: proxy64 tun run [options] "
        "-- CMD [ARGS]",
    ),
    (["tun", "run", "--"], "proxy64 tun run: error: CMD: no command given"),
    (
        ["tun", "run", "--mtu", "100", "--", "true"],
        "proxy64 tun run: error: argument --mtu: '100' is outside 1280-65520 (RFC 8200 §5)",
    ),
    (
        ["tun", "run", "--idle-timeout", "-5", "--", "true"],
        "proxy64 tun run: error: argument --idle-timeout: '-5' is not a number greater than zero",
    ),
    (
        ["tun", "run", "--egress", "foo", "--", "true"],
        "proxy64 tun run: error: argument --egress: invalid choice: 'foo'",
    ),
    (
        ["tun", "serve"],
        "proxy64 tun serve: error: one of the arguments --device --fd is required",
    ),
    (
        ["tun", "serve", "--fd", "abc"],
        "proxy64 tun serve: error: argument --fd: 'abc' is not a file descriptor number",
    ),
    (
        ["tun", "serve", "--fd", "-1"],
        "proxy64 tun serve: error: argument --fd: '-1' is not a file descriptor number",
    ),
    (
        ["tun", "serve", "--device", ""],
        "proxy64 tun serve: error: argument --device: '' is not an interface name",
    ),
    (
        ["tun", "serve", "--device", "a/b"],
        "proxy64 tun serve: error: argument --device: 'a/b' is not an interface name",
    ),
    (
        ["tun", "serve", "--device", "averyveryverylongname0"],
        "proxy64 tun serve: error: argument --device: 'averyveryverylongname0' is longer than "
        "15 bytes",
    ),
    (
        ["tun", "serve", "--fd", "987"],
        "proxy64 tun serve: error: --fd 987 cannot be used (Bad file descriptor); pass the fd "
        "of an open /dev/net/tun attached with TUNSETIFF",
    ),
    (["resolve"], "proxy64 resolve: error: the following arguments are required: NAME"),
    (
        ["resolve", "--dns64-mapped", "foo", "x"],
        "proxy64 resolve: error: argument --dns64-mapped: 'foo' is not an IPv4 network",
    ),
    (
        ["discover", "--probe", "foo"],
        "proxy64 discover: error: argument --probe: 'foo': 'foo' is not an IP address",
    ),
    (["discover", "--dns"], "proxy64 discover: error: argument --dns: expected one argument"),
    (
        ["discover", "--ra-wait", "-1"],
        "proxy64 discover: error: argument --ra-wait: '-1': give seconds from 0 to 3600",
    ),
    (
        ["dns64", "--listen", "[::1]x"],
        "proxy64 dns64: error: argument --listen: '[::1]x': expected HOST:PORT or [IPv6]:PORT",
    ),
]

FILES = {
    "empty": "# nobody\n",
    "badauth": "just-a-user\n",
    "syntax.toml": "socks = \n",
    "type.toml": 'workers = "two"\n',
    "unknown.toml": "bogus = 1\n",
    "listen.toml": "socks = 1080\n",
}


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_exit_2(
    argv: list[str],
    expected: str,
    tmp: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROXY64_AUTH", raising=False)
    argv = [arg.replace("{tmp}", str(tmp)) for arg in argv]
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(expected.replace("{tmp}", str(tmp))), err
    assert "Traceback" not in err


def test_unreadable_auth_file_as_a_user(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp / "secret"
    secret.write_text("alice:pw\n")
    secret.chmod(0)
    if os.geteuid() == 0:
        secret = tmp  # root reads any file; a directory is what root cannot read as text
    code, _, err = run_cli(["serve", "--auth-file", str(secret)], capsys)
    assert code == 2
    assert err.startswith(f"proxy64 serve: error: --auth-file: cannot read {secret}: ")
    assert err.count("\n") == 1


def test_help_of_every_command_states_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """Every option that takes a value says its default in its help text."""
    for argv in (
        ["serve"],
        ["run"],
        ["tun", "run"],
        ["tun", "serve"],
        ["resolve"],
        ["discover"],
        ["dns64"],
    ):
        code, out, _ = run_cli([*argv, "--help"], capsys)
        assert code == 0
        assert out.startswith("usage: proxy64 " + " ".join(argv))
        parser = _command_parser(build_parser(), _namespace(argv))
        for action in parser._actions:
            takes_value = action.option_strings and action.nargs != 0
            if takes_value and action.dest not in ("device", "fd"):  # one of them is required
                assert action.help and "default" in action.help, f"{argv} {action.dest}"


def _namespace(argv: list[str]) -> argparse.Namespace:
    command = argv[0]
    return argparse.Namespace(command=command, tun_command=argv[1] if len(argv) > 1 else None)


def test_top_level_help_lists_commands_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for command in ("serve", "run", "tun", "resolve", "discover", "dns64"):
        assert f"\n    {command} " in out
        assert f"  proxy64 {command}" in out  # an example each
    code, out, _ = run_cli([], capsys)
    assert code == 2 and "commands:" in out


TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
VALUES = st.one_of(
    TEXT, st.integers(), st.floats(), st.booleans(), st.none(), st.lists(TEXT, max_size=3)
)
KEYS = st.sampled_from(
    ["socks", "http", "dns", "nat64_prefix", "egress", "workers", "max_connections",
     "idle_timeout", "connect_timeout", "log_level", "dns64_exclude", "allow_open",
     "synthesize_all", "shutdown_grace", "max_client_connections"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=4))
def test_any_config_value_is_accepted_or_one_config_error(values: dict[str, object]) -> None:
    """Whatever a TOML file or the command line holds: settings, or ConfigError — never
    another exception (which would reach the user as a traceback)."""
    for source in ("file", "cli"):
        try:
            if source == "file":
                build_settings(_parsed(values), {}, {})
            else:
                build_settings({}, values, {})
        except ConfigError as exc:
            assert "\n" not in str(exc)


def _parsed(values: dict[str, object]) -> dict[str, object]:
    from proxy64.serve_config import PARSERS

    return {key: PARSERS[key](value, f"config key {key!r}") for key, value in values.items()}


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_any_toml_text_loads_or_one_config_error(text: str) -> None:
    path = Path(f"/tmp/p64-cli-fuzz-{os.getpid()}.toml")
    path.write_text(text, encoding="utf-8")
    try:
        load_toml(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    finally:
        path.unlink()


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_option_parsers_accept_or_raise_config_error(text: str) -> None:
    """Every option parser: a value, or ConfigError naming the option — nothing else."""
    from proxy64.commands.tun import parse_device_name, parse_fd, parse_mtu
    from proxy64.config import (
        parse_dns_server,
        parse_host_port,
        parse_network6,
        parse_port,
        parse_positive,
        parse_prefix_choice,
    )

    parsers: list[Callable[[str], object]] = [
        lambda t: parse_host_port(t, "--socks", default_port=1080),
        lambda t: parse_host_port(t, "--probe"),
        lambda t: parse_dns_server(t, "--dns"),
        lambda t: parse_port(t, "--port"),
        lambda t: parse_positive(t, "--idle-timeout"),
        lambda t: parse_positive(t, "--workers", integer=True),
        lambda t: parse_prefix_choice(t, "--nat64-prefix"),
        lambda t: parse_network6(t, "--dns64-exclude"),
        lambda t: parse_mtu(t, "--mtu"),
        lambda t: parse_device_name(t, "--device"),
        lambda t: parse_fd(t, "--fd"),
    ]
    for parse in parsers:
        try:
            parse(text)
        except ConfigError as exc:
            assert exc.option.startswith("--") and "\n" not in str(exc)


def test_port_and_count_forms() -> None:
    from proxy64.config import parse_port, parse_positive

    assert parse_port("0", "--socks") == 0 and parse_port("65535", "--socks") == 65535
    for bad in ("65536", "-1", "+80", " 80", "8_0", "٨٠", "", "0x50"):
        with pytest.raises(ConfigError):
            parse_port(bad, "--socks")
    assert parse_positive("2", "--workers", integer=True) == 2
    assert parse_positive("0.5", "--idle-timeout") == 0.5
    for bad in ("1e1", "2.0", "0", "-3", "nan"):
        with pytest.raises(ConfigError):
            parse_positive(bad, "--workers", integer=True)
