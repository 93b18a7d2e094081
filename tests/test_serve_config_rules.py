"""[[rule]] tables in the TOML config, --allow/--deny on the command line, their order,
the built-in rules a shared listener adds, and a bad rule's one line (file and line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy64.cli import build_parser
from proxy64.commands.serve import cli_values
from proxy64.errors import ConfigError
from proxy64.reload import describe_failure
from proxy64.rules import AccessRules
from proxy64.serve_config import build_settings, load_toml

CONFIG = """\
socks = "127.0.0.1:1080"

# the office may reach the intranet's web servers, nothing else there
[[rule]]
action = "allow"
dest = "10.0.0.0/8"
ports = "80,443"
client = "192.0.2.0/24"

  [[ rule ]]
action = "deny"
dest = "10.0.0.0/8"

[[rule]]
action = "deny"
dest = ".internal.example"
ports = 1025
"""


def test_rule_tables_keep_their_order_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "proxy64.toml"
    path.write_text(CONFIG)
    rules = load_toml(path)["rules"]
    assert [str(rule) for rule in rules] == [
        "allow dest 10.0.0.0/8 ports 80,443 client 192.0.2.0/24",
        "deny dest 10.0.0.0/8",
        "deny dest .internal.example ports 1025",
    ]
    assert [rule.origin for rule in rules] == [f"{path} line {n}" for n in (4, 10, 14)]


def test_command_line_rules_come_before_the_file_and_the_built_ins(tmp_path: Path) -> None:
    path = tmp_path / "proxy64.toml"
    path.write_text(CONFIG)
    args = build_parser().parse_args(
        ["serve", "--deny", "10.1.2.3", "--allow", ".ok.example ports=443", "--deny", "ports=25"]
    )
    given = cli_values(args)
    settings = build_settings(load_toml(path), given, {"PROXY64_AUTH": "u:p"})
    assert [rule.origin for rule in settings.rules][:3] == ["--deny", "--allow", "--deny"]
    assert len(settings.rules) == 6
    shared = build_settings(
        load_toml(path), {**given, "socks": "[::]:1080"}, {"PROXY64_AUTH": "u:p"}
    )
    access = AccessRules.build(shared.rules, protect_host=shared.destination_policy().protect_host)
    assert [str(rule) for rule in access.rules[-2:]] == [
        "deny dest this-host",
        "deny dest link-local",
    ]
    opened = build_settings(
        {}, {"socks": "[::]:1080", "allow_host_access": True}, {"PROXY64_AUTH": "u:p"}
    )
    assert not opened.destination_policy().protect_host  # --allow-host-access: no built-ins


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('action = "deny"\ndest = "10.0.0.0/33"', "dest '10.0.0.0/33' is not an address or CIDR"),
        ('action = "block"', "action is 'block'"),
        ('action = "deny"\nport = "22"', "unknown key 'port'"),
    ],
)
def test_a_bad_rule_names_the_file_and_its_line(tmp_path: Path, table: str, problem: str) -> None:
    path = tmp_path / "proxy64.toml"
    path.write_text(f'log_level = "info"\n\n[[rule]]\naction = "allow"\n\n[[rule]]\n{table}\n')
    with pytest.raises(ConfigError) as info:
        load_toml(path)
    line = describe_failure(info.value, path, None)
    assert line.startswith(f"{path}: line 6: [[rule]]: ") and problem in line
    assert "\n" not in line


def test_rule_must_be_tables(tmp_path: Path) -> None:
    path = tmp_path / "proxy64.toml"
    path.write_text('rule = "deny 10.0.0.0/8"\n')
    with pytest.raises(ConfigError, match="array of tables"):
        load_toml(path)
