"""SIGHUP: read the config file and the auth file again; new connections use them.

What a reload changes: the users and passwords (the one credentials dict every front end
reads at each handshake, and the metrics endpoint too, is updated in place, so a tunnel
that is open stays open and the next handshake sees the new users), the access rules
(the PolicyInForce the dialer reads at each dial gets the new ones: a tunnel already
dialed is not judged again) and the log level.
What it cannot change is reported and left as it is, in force until the next start:
listeners, workers, the NAT64 prefix and egress, the metrics address, limits and
timeouts (they are built into sockets, processes and objects at start-up), and turning
authentication on or off (the safety check of non-loopback listeners depends on it).
A file that fails to load leaves every setting as it was and logs one line naming the
file and the problem (its line, when the parser knows it). No trio, no sockets.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from proxy64.errors import ConfigError
from proxy64.policy import PolicyInForce
from proxy64.serve_config import ServeSettings

logger = logging.getLogger(__name__)

RELOADED = ("credentials", "log_level", "rules")


def changed_keys(old: ServeSettings, new: ServeSettings) -> list[str]:
    """The settings that differ and that a reload does not apply (they need a restart)."""
    return [
        field.name
        for field in dataclasses.fields(ServeSettings)
        if field.name not in RELOADED
        and field.name != "auth_file"  # where the users come from: they are reloaded
        and getattr(old, field.name) != getattr(new, field.name)
    ]


def describe_failure(exc: ConfigError, config: Path | None, auth_file: Path | None) -> str:
    """'FILE: problem' for a ConfigError raised while loading `config` or `auth_file`."""
    if exc.option == "--auth-file" and auth_file is not None:
        return f"{auth_file}: {exc.problem}"
    if exc.option.startswith("--config ") or config is None:
        return f"{exc.option.removeprefix('--config ')}: {exc.problem}"
    return f"{config}: {exc}"


class Reloader:
    """Holds the settings in force and applies a reload to them (reload() on SIGHUP).

    `load` builds fresh settings from the same sources as at start-up (config file,
    command line, environment); `credentials` is the dict the front ends read (None:
    no authentication, which a reload cannot turn on); `policy` the dialer's policy in
    force, whose rules a reload replaces (None: the rules are only checked, as the
    supervisor of workers does). `quiet`: a worker's success and warnings are debug
    lines, the supervisor has logged them once already."""

    def __init__(
        self,
        load: Callable[[], ServeSettings],
        settings: ServeSettings,
        credentials: dict[str, str] | None,
        config: Path | None = None,
        *,
        quiet: bool = False,
        policy: PolicyInForce | None = None,
    ) -> None:
        self.load = load
        self._told = logging.DEBUG if quiet else logging.INFO  # workers: the supervisor tells
        self.settings = settings
        self.credentials = credentials
        self.config = config
        self.policy = policy

    def reload(self) -> bool:
        """Re-read and apply; False (one error line, nothing changed) when a file is bad."""
        old = self.settings
        try:
            new = self.load()
            if bool(new.credentials) != (self.credentials is not None):
                raise ConfigError(
                    "--auth-file",
                    "a reload cannot turn authentication on or off; restart proxy64 for that",
                )
        except ConfigError as exc:
            logger.error(
                "SIGHUP: %s; the previous settings stay in force",
                describe_failure(exc, self.config, old.auth_file),
            )
            return False
        if self.credentials is not None:
            self.credentials.clear()
            self.credentials.update(new.credentials)
        kept = dataclasses.replace(
            old, credentials=new.credentials, log_level=new.log_level, rules=new.rules
        )
        if self.policy is not None:
            # listeners and --allow-host-access stay as started: the built-in rules too
            self.policy.set(kept.destination_policy())
        logging.getLogger().setLevel(new.log_level.upper())
        for key in changed_keys(old, new):
            logger.log(
                max(self._told, logging.WARNING) if self._told == logging.INFO else self._told,
                "SIGHUP: %s changed; it takes effect at the next start",
                key,
            )
        self.settings = kept
        users, rules = len(new.credentials), len(new.rules)
        counts = [f"{users} user{'s' if users != 1 else ''}"] if users else []
        counts += [f"{rules} access rule{'s' if rules != 1 else ''}"] if rules else []
        logger.log(
            self._told,
            "SIGHUP: settings reloaded%s",
            f" ({', '.join(counts)})" if counts else "",
        )
        return True
