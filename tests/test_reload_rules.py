"""The pure parts of SIGHUP reload: which changed settings need a restart, and the one
line naming the file and the problem when a file fails to load."""

from __future__ import annotations

import dataclasses
import logging
from ipaddress import ip_address
from pathlib import Path

import pytest

from proxy64.errors import ConfigError
from proxy64.reload import Reloader, changed_keys, describe_failure
from proxy64.serve_config import ServeSettings

CONFIG = Path("/etc/proxy64/proxy64.toml")
USERS = Path("/etc/proxy64/users")


@pytest.mark.parametrize(
    ("change", "needs_restart"),
    [
        ({"credentials": (("bob", "x"),)}, []),
        ({"log_level": "debug"}, []),
        ({"auth_file": Path("/elsewhere")}, []),
        ({"idle_timeout": 5.0}, ["idle_timeout"]),
        ({"workers": 3, "metrics": None, "socks": None}, ["socks", "workers"]),
    ],
)
def test_changed_keys_names_what_needs_a_restart(
    change: dict[str, object], needs_restart: list[str]
) -> None:
    old = ServeSettings()
    new = dataclasses.replace(old, **change)  # type: ignore[arg-type]
    assert changed_keys(old, new) == needs_restart


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (ConfigError("--auth-file", "line 3 is not user:password"),
         f"{USERS}: line 3 is not user:password"),
        (ConfigError(f"--config {CONFIG}", "not valid TOML: Expected '=' (at line 2, column 9)"),
         f"{CONFIG}: not valid TOML: Expected '=' (at line 2, column 9)"),
        (ConfigError("config key 'egres'", "unknown key"),
         f"{CONFIG}: config key 'egres': unknown key"),
    ],
)  # fmt: skip
def test_describe_failure_names_the_file(error: ConfigError, line: str) -> None:
    assert describe_failure(error, CONFIG, USERS) == line


def test_a_failed_reload_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    settings = ServeSettings(credentials=(("alice", "one"),))
    shared = {"alice": "one"}

    def broken() -> ServeSettings:
        raise ConfigError("--auth-file", "line 1 is not user:password")

    reloader = Reloader(broken, settings, shared, CONFIG)
    with caplog.at_level(logging.INFO):
        assert reloader.reload() is False
    assert shared == {"alice": "one"} and reloader.settings is settings
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and "stay in force" in record.getMessage()


def test_a_good_reload_updates_the_shared_dict_in_place() -> None:
    settings = ServeSettings(credentials=(("alice", "one"),))
    shared = {"alice": "one"}
    fresh = dataclasses.replace(settings, credentials=(("bob", "two"), ("carol", "3")))
    reloader = Reloader(lambda: fresh, settings, shared)
    assert reloader.reload() is True
    assert shared == {"bob": "two", "carol": "3"}
    assert reloader.settings.credentials == fresh.credentials


def test_a_reload_replaces_the_access_rules_and_keeps_the_built_ins() -> None:
    from proxy64.config import HostPort
    from proxy64.policy import PolicyInForce
    from proxy64.rules import Action, parse_rule_line

    deny = parse_rule_line("10.0.0.0/8", "--deny", Action.DENY)
    shared_socks = HostPort(ip_address("::"), 1080)
    settings = ServeSettings(socks=shared_socks, credentials=(("alice", "one"),))
    live = PolicyInForce(settings.destination_policy())
    assert [str(r) for r in live.access.rules] == ["deny dest this-host", "deny dest link-local"]
    fresh = dataclasses.replace(settings, rules=(deny,))
    reloader = Reloader(lambda: fresh, settings, {"alice": "one"}, policy=live)
    assert changed_keys(settings, fresh) == []  # rules are applied, not postponed
    assert reloader.reload() is True
    assert [str(r) for r in live.access.rules] == [
        "deny dest 10.0.0.0/8",
        "deny dest this-host",
        "deny dest link-local",
    ]
    assert reloader.settings.rules == (deny,)

    def broken() -> ServeSettings:
        raise ConfigError(f"--config {CONFIG}", "line 4: [[rule]]: ports '0' is not PORT")

    reloader.load = broken
    assert reloader.reload() is False
    assert live.access.rules[0] is deny  # the old rules stay in force
