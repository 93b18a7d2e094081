"""Access rules: allow and deny by destination (CIDR, name, name suffix, port) and client.

Pure: text or TOML tables in, frozen Rules out; a request's name, addresses, port and
client in, the first matching rule out. No socket, no clock, no logging.

- A rule has an action (allow, deny) and up to three conditions, all of which must hold:
  `dest` (an address or CIDR, an exact name `example.com`, a name suffix `.example.com`
  that matches example.com and every name under it, or one of the keywords `this-host`
  and `link-local`), `ports` (`443`, `8000-8999`, or a comma list of both) and `client`
  (an address or CIDR). A rule without conditions matches every request.
- Rules are evaluated in order; the first match decides; no match allows.
- A name condition matches the requested name only. An address condition matches each
  target the dialer planned: the address dialed, the IPv4 address behind a target inside
  the NAT64 prefix (so `deny 10.0.0.0/8` also refuses 64:ff9b::a00:1) and, under the
  embedded egress, the IPv6 form of the dialed IPv4 address.
- `this-host` is loopback (127.0.0.0/8, ::1), the names localhost and *.localhost
  (RFC 6761 §6.3) and this host's own addresses; `link-local` is 169.254.0.0/16 (cloud
  metadata 169.254.169.254), fe80::/10 and the IPv6 metadata address fd00:ec2::254.
  Behind a listener beyond loopback the two are denied by built-in rules placed after
  every user rule, so an allow rule can open a part of them.
One-line syntax (--allow/--deny): space-separated `key=value` fields with the keys of the
TOML tables; a first field without `=` is the dest: `10.0.0.0/8 ports=1-1024`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from proxy64.errors import ConfigError
from proxy64.places import is_link_local, is_localhost_name, is_loopback

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

KEYS = ("action", "dest", "ports", "client")
RULE_FORMS = (
    "[dest=]ADDRESS|CIDR|NAME|.SUFFIX|this-host|link-local, ports=PORT|LOW-HIGH[,...], "
    "client=ADDRESS|CIDR (space-separated; at least one)"
)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class Action(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


class Place(enum.Enum):
    """The destination keywords: sets of addresses that change with the host."""

    THIS_HOST = "this-host"
    LINK_LOCAL = "link-local"


Dest = IPNetwork | str | Place  # str: a name, a suffix when it starts with "."


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    dest: Dest | None = None
    ports: tuple[tuple[int, int], ...] = ()  # inclusive ranges; empty: every port
    client: IPNetwork | None = None
    origin: str = ""  # where it was written: "--deny", "FILE line N", "built-in"

    def __str__(self) -> str:
        words = [self.action.value]
        if self.dest is not None:
            dest = self.dest.value if isinstance(self.dest, Place) else str(self.dest)
            words.append(f"dest {dest}")
        if self.ports:
            words.append("ports " + ",".join(_port_text(low, high) for low, high in self.ports))
        if self.client is not None:
            words.append(f"client {self.client}")
        if len(words) == 1:
            words.append("any")
        return " ".join(words)

    def line(self) -> str:
        """The conditions in the one-line syntax of --allow/--deny (parses back to self)."""
        fields = []
        if self.dest is not None:
            fields.append(f"dest={self.dest.value if isinstance(self.dest, Place) else self.dest}")
        if self.ports:
            fields.append("ports=" + ",".join(_port_text(low, high) for low, high in self.ports))
        if self.client is not None:
            fields.append(f"client={self.client}")
        return " ".join(fields) or "dest=any"

    def matches_name(self, name: str | None) -> bool | None:
        """Whether dest holds for a requested name: None when dest is about addresses."""
        dest = self.dest
        if dest is None:
            return True
        if isinstance(dest, str):
            if name is None:
                return False
            name = name.rstrip(".").lower()
            if dest.startswith("."):
                return name == dest[1:] or name.endswith(dest)
            return name == dest
        if dest is Place.THIS_HOST and name is not None and is_localhost_name(name):
            return True
        return None

    def matches_address(self, address: IPAddress, own: Set[IPAddress]) -> bool:
        dest = self.dest
        if isinstance(dest, IPv4Network | IPv6Network):
            return address.version == dest.version and address in dest
        if dest is Place.THIS_HOST:
            return is_loopback(address) or address in own
        if dest is Place.LINK_LOCAL:
            return is_link_local(address)
        return False


BUILT_IN = (
    Rule(Action.DENY, Place.THIS_HOST, origin="built-in"),
    Rule(Action.DENY, Place.LINK_LOCAL, origin="built-in"),
)


@dataclass(frozen=True, slots=True)
class Match:
    """The rule that decided: its place in the list in force (1-based) and itself."""

    number: int
    rule: Rule
    address: IPAddress | None = None  # the address an address rule matched

    def describe(self) -> str:
        """'rule 3 (deny dest 10.0.0.0/8, --deny)': the log line's name for it."""
        return f"rule {self.number} ({self.rule}, {self.rule.origin})"


@dataclass(frozen=True, slots=True)
class AccessRules:
    """The rules in force, in order: the user's, then the built-in ones when the host is
    protected. Precomputed flags keep the no-rule dial path to one test."""

    rules: tuple[Rule, ...] = ()
    needs_own_addresses: bool = field(init=False)  # a this-host rule: read the addresses
    needs_client: bool = field(init=False)  # a client rule: parse the client's address

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "needs_own_addresses", any(r.dest is Place.THIS_HOST for r in self.rules)
        )
        object.__setattr__(self, "needs_client", any(r.client is not None for r in self.rules))

    @classmethod
    def build(cls, user: Iterable[Rule], *, protect_host: bool) -> AccessRules:
        return cls(tuple(user) + (BUILT_IN if protect_host else ()))

    def before_resolution(
        self, *, name: str, port: int, client: IPAddress | None
    ) -> tuple[bool, Match | None]:
        """(decided, match) for a name before it is resolved: decided when every rule
        before the deciding one is ruled out by its name, ports or client alone, so the
        addresses cannot change the answer (a denied name is never asked of DNS)."""
        for number, rule in enumerate(self.rules, start=1):
            if not _holds_apart_from_dest(rule, port, client):
                continue
            by_name = rule.matches_name(name)
            if by_name is None:
                return False, None  # an address rule: the answer waits for the addresses
            if by_name:
                return True, Match(number, rule)
        return True, None

    def first_match(
        self,
        *,
        name: str | None,
        addresses: Sequence[IPAddress],
        port: int,
        client: IPAddress | None,
        own: Set[IPAddress] = frozenset(),
    ) -> Match | None:
        """The first rule whose every condition holds for one target, or None.

        name: the requested name (None for an address literal); addresses: the target's
        addresses (dialed, the IPv4 behind it, its IPv6 form); client: None when unknown
        (a rule with a client condition then does not match)."""
        for number, rule in enumerate(self.rules, start=1):
            if not _holds_apart_from_dest(rule, port, client):
                continue
            by_name = rule.matches_name(name)
            if by_name is False:
                continue
            if by_name is None:
                matched = next((a for a in addresses if rule.matches_address(a, own)), None)
                if matched is None:
                    continue
                return Match(number, rule, matched)
            return Match(number, rule)
        return None


def _holds_apart_from_dest(rule: Rule, port: int, client: IPAddress | None) -> bool:
    """Whether a rule's ports and client conditions hold (dest aside)."""
    if rule.ports and not any(low <= port <= high for low, high in rule.ports):
        return False
    if rule.client is None:
        return True
    return client is not None and client.version == rule.client.version and client in rule.client


# --- parsing ---------------------------------------------------------------------------------


def parse_rule_line(text: str, option: str, action: Action) -> Rule:
    """The one-line form of --allow/--deny: `[dest=]D ports=P client=C` (any order)."""
    if not isinstance(text, str):
        raise ConfigError(option, f"{text!r} is not a rule; expected {RULE_FORMS}")
    fields: dict[str, str] = {}
    for index, word in enumerate(text.split()):
        key, sep, value = word.partition("=")
        if not sep:
            if index != 0:
                raise ConfigError(option, f"{word!r} is not key=value; expected {RULE_FORMS}")
            key, value = "dest", word
        key = key.strip().lower()
        if key not in KEYS or key == "action":
            raise ConfigError(option, f"unknown field {key!r}; expected {RULE_FORMS}")
        if key in fields:
            raise ConfigError(option, f"{key} given twice in {text!r}")
        fields[key] = value
    if not fields:
        raise ConfigError(option, f"an empty rule; expected {RULE_FORMS} (or dest=any)")
    return _rule(action, fields, option, origin=option)


def parse_rule_table(table: object, where: str) -> Rule:
    """One [[rule]] table of the TOML config: action (required), dest, ports, client."""
    if not isinstance(table, Mapping):
        raise ConfigError(where, f"{table!r} is not a table; write [[rule]] with action = ...")
    unknown = [key for key in table if key not in KEYS]
    if unknown:
        raise ConfigError(where, f"unknown key {unknown[0]!r}; a rule has {', '.join(KEYS)}")
    action_text = table.get("action")
    try:
        action = Action(str(action_text).strip().lower()) if action_text is not None else None
    except ValueError:
        action = None
    if action is None or not isinstance(action_text, str):
        raise ConfigError(where, f'action is {action_text!r}; expected "allow" or "deny"')
    values: dict[str, str] = {}
    for key in ("dest", "ports", "client"):
        value = table.get(key)
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and key == "ports":
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(where, f"{key} is {value!r}; expected a string")
        values[key] = value
    return _rule(action, values, where, origin=where)


def _rule(action: Action, fields: Mapping[str, str], option: str, *, origin: str) -> Rule:
    dest = _dest(fields["dest"], option) if "dest" in fields else None
    ports = _ports(fields["ports"], option) if "ports" in fields else ()
    client = _network(fields["client"], option, "client") if "client" in fields else None
    return Rule(action, dest, ports, client, origin)


def _dest(text: str, option: str) -> Dest | None:
    value = text.strip().lower()
    if value in ("any", "*"):
        return None
    for place in Place:
        if value == place.value:
            return place
    if value and (value[0].isdigit() or ":" in value):
        try:
            return _network(value, option, "dest")
        except ConfigError:
            if ":" in value or value.replace(".", "").replace("/", "").isdigit():
                raise
    return _name(value, option)


def _name(value: str, option: str) -> str:
    name = value.rstrip(".") if value != "." else value
    labels = name[1:].split(".") if name.startswith(".") else name.split(".")
    if (
        not name
        or not set(name) <= _NAME_CHARS
        or any(not label or len(label) > 63 for label in labels)  # RFC 1035 §2.3.4
        or len(name) > 253
    ):
        hint = "; write .example.com for a name and every name under it" if "*" in name else ""
        raise ConfigError(
            option, f"dest {value!r} is not an address, a CIDR, a name or a .suffix{hint}"
        )
    return name


def _network(text: str, option: str, key: str) -> IPNetwork:
    value = text.strip()
    try:
        if "/" not in value:
            return ip_network(ip_address(value))
        return ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(
            option, f"{key} {text!r} is not an address or CIDR (such as 10.0.0.0/8, 2001:db8::/32)"
        ) from None


def _ports(text: str, option: str) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for part in text.split(","):
        low_text, sep, high_text = part.strip().partition("-")
        try:
            low = int(low_text, 10)
            high = int(high_text, 10) if sep else low
        except ValueError:
            low, high = -1, -1
        if not (0 < low <= high <= 65535) or not low_text.strip().isdigit():
            raise ConfigError(
                option,
                f"ports {text!r} is not PORT, LOW-HIGH or a comma list of them (1-65535)",
            )
        out.append((low, high))
    return tuple(out)


def _port_text(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


def client_address(text: str) -> IPAddress | None:
    """The address of a client as the records write it (`host:port`, `[v6]:port`), or
    None when it has no address form."""
    host = text
    if text.startswith("["):
        host = text[1 : text.find("]")]
    elif text.count(":") == 1:
        host = text.partition(":")[0]
    try:
        return ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
