"""Access rules (proxy64/rules.py): the parser (tables, then hypothesis: only ConfigError,
and every rule parses back from its own line) and first-match evaluation over rule sets
by CIDR, name, suffix, port and client, with the built-in rules of a shared listener."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.errors import ConfigError
from proxy64.rules import (
    AccessRules,
    Action,
    Place,
    Rule,
    client_address,
    parse_rule_line,
    parse_rule_table,
)

IPAddress = IPv4Address | IPv6Address
ALLOW, DENY = Action.ALLOW, Action.DENY


def rules(*lines: str) -> AccessRules:
    """'deny 10.0.0.0/8 ports=22' lines as the rules in force (no built-ins)."""
    parsed = []
    for text in lines:
        action, _, rest = text.partition(" ")
        parsed.append(parse_rule_line(rest, f"--{action}", Action(action)))
    return AccessRules(tuple(parsed))


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dest", "ports", "client"),
    [
        ("10.0.0.0/8", IPv4Network("10.0.0.0/8"), (), None),
        ("dest=10.1.2.3", IPv4Network("10.1.2.3/32"), (), None),
        ("10.1.2.3/8", IPv4Network("10.0.0.0/8"), (), None),  # host bits dropped
        ("2001:db8::/32 ports=443", IPv6Network("2001:db8::/32"), ((443, 443),), None),
        ("Example.COM.", "example.com", (), None),
        (".example.com ports=80,443,8000-8999", ".example.com",
         ((80, 80), (443, 443), (8000, 8999)), None),
        ("1password.com", "1password.com", (), None),  # a name that starts with a digit
        ("ports=25", None, ((25, 25),), None),
        ("client=192.0.2.0/24", None, (), IPv4Network("192.0.2.0/24")),
        ("any client=fd00::1", None, (), IPv6Network("fd00::1/128")),
        ("client=fd00::/8 dest=this-host", Place.THIS_HOST, (), IPv6Network("fd00::/8")),
        ("link-local ports=80", Place.LINK_LOCAL, ((80, 80),), None),
    ],
)  # fmt: skip
def test_parse_rule_line(text: str, dest: object, ports: object, client: object) -> None:
    rule = parse_rule_line(text, "--deny", Action.DENY)
    assert (rule.action, rule.dest, rule.ports, rule.client) == (DENY, dest, ports, client)
    assert rule.origin == "--deny"
    assert parse_rule_line(rule.line(), "--deny", Action.DENY) == rule


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "an empty rule"),
        ("10.0.0.0/33", "dest '10.0.0.0/33' is not an address or CIDR"),
        ("10.0.0.256", "dest '10.0.0.256' is not an address or CIDR"),
        ("*.example.com", "write .example.com"),
        ("exa mple.com", "'mple.com' is not key=value"),
        ("ports=0", "ports '0' is not PORT, LOW-HIGH"),
        ("ports=65536", "ports '65536'"),
        ("ports=9-1", "ports '9-1'"),
        ("ports=+5", "ports '+5'"),
        ("client=example.com", "client 'example.com' is not an address or CIDR"),
        ("colour=red", "unknown field 'colour'"),
        ("action=deny", "unknown field 'action'"),
        ("dest=a dest=b", "dest given twice"),
        ("a..b", "dest 'a..b' is not"),
    ],
)
def test_parse_rule_line_refuses_with_one_line(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rule_line(text, "--allow", Action.ALLOW)
    assert info.value.option == "--allow"
    assert problem in info.value.problem and "\n" not in str(info.value)


def test_parse_rule_table() -> None:
    rule = parse_rule_table(
        {"action": "deny", "dest": "10.0.0.0/8", "ports": "1-1024", "client": "192.0.2.0/24"},
        "p.toml line 3",
    )
    assert str(rule) == "deny dest 10.0.0.0/8 ports 1-1024 client 192.0.2.0/24"
    assert rule.origin == "p.toml line 3"
    assert parse_rule_table({"action": "allow", "ports": 443}, "x").ports == ((443, 443),)
    assert str(parse_rule_table({"action": "deny"}, "x")) == "deny any"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"dest": "10.0.0.0/8"}, 'action is None; expected "allow" or "deny"'),
        ({"action": "drop"}, "action is 'drop'"),
        ({"action": "deny", "dst": "x"}, "unknown key 'dst'"),
        ({"action": "deny", "dest": ["a", "b"]}, "dest is ['a', 'b']; expected a string"),
        ("deny 10/8", "is not a table"),
    ],
)
def test_parse_rule_table_refuses(table: object, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rule_table(table, "p.toml line 7")
    assert info.value.option == "p.toml line 7" and problem in info.value.problem


def only_config_error(text: str) -> None:
    try:
        rule = parse_rule_line(text, "--deny", Action.DENY)
    except ConfigError as exc:
        assert exc.option == "--deny" and "\n" not in exc.problem
    else:
        assert parse_rule_line(rule.line(), "--deny", Action.DENY) == rule


@given(st.text(max_size=60))
def test_fuzz_rule_line_only_config_error(text: str) -> None:
    only_config_error(text)


_FIELD = st.sampled_from(
    ["dest=", "ports=", "client=", "10.", "/8", ".example", "::", "1-", ",", "any", " ", "x"]
)


@given(st.lists(_FIELD, max_size=8).map("".join))
def test_fuzz_rule_line_near_misses(text: str) -> None:
    only_config_error(text)


_V4NETS = st.builds(
    lambda a, n: IPv4Network((a, n), strict=False),
    st.integers(0, (1 << 32) - 1),
    st.integers(0, 32),
)
_V6NETS = st.builds(
    lambda a, n: IPv6Network((a, n), strict=False),
    st.integers(0, (1 << 128) - 1),
    st.integers(0, 128),
)
_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
_NAMES = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)
_PORTS = st.lists(
    st.tuples(st.integers(1, 65535), st.integers(0, 100)).map(
        lambda p: (p[0], min(65535, p[0] + p[1]))
    ),
    max_size=3,
).map(tuple)


@given(
    st.sampled_from(list(Action)),
    st.one_of(
        st.none(),
        _V4NETS,
        _V6NETS,
        _NAMES,
        _NAMES.map(lambda n: "." + n),
        st.sampled_from(list(Place)),
    ),
    _PORTS,
    st.one_of(st.none(), _V4NETS, _V6NETS),
)
def test_every_rule_parses_back_from_its_line(
    action: Action, dest: object, ports: tuple[tuple[int, int], ...], client: object
) -> None:
    rule = Rule(action, dest, ports, client, "--x")  # type: ignore[arg-type]
    if isinstance(dest, str) and dest.lstrip(".") in {"any", "this-host", "link-local"}:
        return  # keywords, not names
    if isinstance(dest, str) and dest.lstrip(".")[:1].isdigit() and dest.replace(".", "").isdigit():
        return  # all digits and dots: an address, never a name
    assert parse_rule_line(rule.line(), "--x", action) == rule


# --- evaluation ----------------------------------------------------------------------------------

OWN: frozenset[IPAddress] = frozenset({IPv4Address("192.0.2.2"), IPv6Address("2001:db8::2")})
SET_A = rules(
    "allow 10.1.0.0/16 ports=443",
    "deny 10.0.0.0/8",
    "deny .corp.example",
    "allow api.corp.example",  # never reached: the suffix above matches first
    "deny ports=25",
    "deny client=192.0.2.128/25",
)
SET_B = rules(
    "allow client=fd00::/8 ports=80-89",
    "deny any",  # an explicit default: deny the rest
)


@pytest.mark.parametrize(
    ("ruleset", "name", "addresses", "port", "client", "decided"),
    [
        # CIDR: the literal, the IPv4 behind a NAT64 address, an allow before a deny
        (SET_A, None, ["10.2.3.4"], 80, "198.51.100.1", 2),
        (SET_A, None, ["64:ff9b::a00:1", "10.0.0.1"], 80, "198.51.100.1", 2),
        (SET_A, None, ["10.1.2.3"], 443, "198.51.100.1", 1),
        (SET_A, None, ["10.1.2.3"], 444, "198.51.100.1", 2),
        (SET_A, None, ["2001:db8::9"], 80, "198.51.100.1", None),
        # names: exact and suffix (the suffix includes the name itself)
        (SET_A, "corp.example", ["2001:db8::9"], 443, None, 3),
        (SET_A, "api.corp.example", ["2001:db8::9"], 443, None, 3),
        (SET_A, "notcorp.example", ["2001:db8::9"], 443, None, None),
        (SET_A, "corp.example.org", ["2001:db8::9"], 443, None, None),
        # a name that resolves into a denied network
        (SET_A, "intranet.example", ["64:ff9b::a09:807", "10.9.8.7"], 443, None, 2),
        # ports
        (SET_A, "mail.example", ["2001:db8::25"], 25, None, 5),
        (SET_A, "mail.example", ["2001:db8::25"], 587, None, None),
        # client
        (SET_A, "www.example", ["2001:db8::80"], 80, "192.0.2.200", 6),
        (SET_A, "www.example", ["2001:db8::80"], 80, "192.0.2.100", None),
        (SET_A, "www.example", ["2001:db8::80"], 80, None, None),  # unknown client
        (SET_B, "www.example", ["2001:db8::80"], 85, "fd00::1", 1),
        (SET_B, "www.example", ["2001:db8::80"], 90, "fd00::1", 2),
        (SET_B, "www.example", ["2001:db8::80"], 85, "192.0.2.1", 2),  # other family
        (SET_B, None, [], 85, None, 2),
    ],
)
def test_first_match_over_rule_sets(
    ruleset: AccessRules,
    name: str | None,
    addresses: list[str],
    port: int,
    client: str | None,
    decided: int | None,
) -> None:
    match = ruleset.first_match(
        name=name,
        addresses=[ip_address(a) for a in addresses],
        port=port,
        client=ip_address(client) if client else None,
        own=OWN,
    )
    assert (match.number if match else None) == decided


SHARED = AccessRules.build(
    [parse_rule_line("169.254.169.254 ports=80", "--allow", ALLOW)], protect_host=True
)


@pytest.mark.parametrize(
    ("name", "addresses", "port", "decided"),
    [
        (None, ["127.0.0.1"], 80, "deny dest this-host"),
        (None, ["::1"], 80, "deny dest this-host"),
        (None, ["::ffff:127.0.0.1", "127.0.0.1"], 80, "deny dest this-host"),
        ("localhost", [], 80, "deny dest this-host"),
        ("app.localhost", ["::1"], 80, "deny dest this-host"),
        (None, ["192.0.2.2"], 80, "deny dest this-host"),  # one of this host's addresses
        (None, ["64:ff9b::c000:202", "192.0.2.2"], 80, "deny dest this-host"),
        (None, ["2001:db8::2"], 80, "deny dest this-host"),
        (None, ["169.254.169.254"], 443, "deny dest link-local"),
        (None, ["64:ff9b::a9fe:a9fe", "169.254.169.254"], 22, "deny dest link-local"),
        (None, ["fd00:ec2::254"], 80, "deny dest link-local"),
        (None, ["fe80::1"], 80, "deny dest link-local"),
        (None, ["169.254.169.254"], 80, "allow dest 169.254.169.254/32 ports 80"),  # user first
        (None, ["64:ff9b::a00:1", "10.0.0.1"], 80, None),
        ("www.example", ["2001:db8::9"], 80, None),
    ],
)
def test_built_in_rules_of_a_shared_listener(
    name: str | None, addresses: list[str], port: int, decided: str | None
) -> None:
    match = SHARED.first_match(
        name=name, addresses=[ip_address(a) for a in addresses], port=port, client=None, own=OWN
    )
    assert (str(match.rule) if match else None) == decided
    if match is not None and match.rule.action is DENY:
        assert match.describe() == f"rule {match.number} ({decided}, built-in)"


def test_no_built_in_rules_on_loopback() -> None:
    assert AccessRules.build([], protect_host=False).rules == ()
    assert AccessRules.build([], protect_host=True).needs_own_addresses


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("192.0.2.1:5000", "192.0.2.1"),
        ("[2001:db8::1]:5000", "2001:db8::1"),
        ("[fe80::1%eth0]:5000", "fe80::1"),
        ("fd00::1", "fd00::1"),
        ("?", None),
        ("unknown", None),
    ],
)
def test_client_address_from_the_record_text(text: str, address: str | None) -> None:
    assert client_address(text) == (ip_address(address) if address else None)


@pytest.mark.parametrize(
    ("ruleset", "name", "port", "client", "expected"),
    [
        (SET_A, "x.corp.example", 443, None, (False, None)),  # rule 1 needs the addresses
        (SET_A, "x.corp.example", 80, None, (False, None)),  # rule 2 needs them too
        (rules("deny ports=22", "deny .corp.example"), "corp.example", 443, None, (True, 2)),
        (rules("deny .corp.example", "deny 10.0.0.0/8"), "a.corp.example", 443, None, (True, 1)),
        (rules("allow www.example", "deny any"), "www.example", 80, None, (True, 1)),
        (rules("allow www.example", "deny any"), "ads.example", 80, None, (True, 2)),
        (rules("deny client=192.0.2.0/24"), "www.example", 80, "192.0.2.1", (True, 1)),
        (rules("deny client=192.0.2.0/24"), "www.example", 80, "198.51.100.1", (True, None)),
    ],
)
def test_before_resolution_decides_only_what_addresses_cannot_change(
    ruleset: AccessRules,
    name: str,
    port: int,
    client: str | None,
    expected: tuple[bool, int | None],
) -> None:
    decided, match = ruleset.before_resolution(
        name=name, port=port, client=ip_address(client) if client else None
    )
    assert (decided, match.number if match else None) == expected


_TABLE_VALUES = st.one_of(
    st.text(max_size=20),
    st.integers(-5, 70000),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=5), max_size=2),
)


@given(
    st.dictionaries(
        st.sampled_from(["action", "dest", "ports", "client", "port", "x"]), _TABLE_VALUES
    )
)
def test_fuzz_rule_table_only_config_error(table: dict[str, object]) -> None:
    try:
        rule = parse_rule_table(table, "p.toml line 1")
    except ConfigError as exc:
        assert exc.option == "p.toml line 1" and "\n" not in exc.problem
    else:
        action = table["action"]
        assert isinstance(action, str)  # a rule parsed: its action was text
        assert rule.action.value == action.strip().lower()
