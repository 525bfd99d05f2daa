"""The original jobsync's environment variables: each honoured or refused, none ignored.

The original (its 1.1 ``config`` module) read twenty ``SYNC_*`` variables.
``jobsync.config`` reads them as follows; a worker started with one it
refuses stops at once with a ``ConfigError`` naming the variable and what
replaces it, so a deployment's old settings never silently stop meaning
anything.

Honoured as the original read them (``config.py``): ``SYNC_SQL_HOST``,
``SYNC_SQL_PORT``, ``SYNC_SQL_DATABASE``, ``SYNC_SQL_USERNAME``,
``SYNC_SQL_PASSWORD``, ``SYNC_COORDINATION_ENABLED``, ``SYNC_TOTAL_TOKENS``,
``SYNC_HEARTBEAT_INTERVAL``, ``SYNC_HEARTBEAT_TIMEOUT``; and
``SYNC_REBALANCE_INTERVAL``, ``SYNC_TOKEN_REFRESH_STEADY`` and
``SYNC_TOKEN_REFRESH_INITIAL``, each a bound on the fallback read (changes
themselves arrive at once).

Honoured here: ``SYNC_SQL_APPNAME``, the table prefix (``jobsync_prefix`` of
a PostgreSQL URL); ``SYNC_SQL_PROFILE`` when it names PostgreSQL (the only
database the original ran on); ``SYNC_LOCKS_ENABLED=true`` (locks are always
on).  Refused: everything in ``REFUSED`` and the values ``refusal`` names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

from jobsync.core.errors import ConfigError

REFUSED = {
    "SYNC_SQL_TIMEZONE": "jobsync keeps every time as timestamptz and needs no session "
    "time zone (the zone of the original 1.1's zone-less times is `jobsync migrate "
    "--timezone`)",
    "SYNC_DEAD_NODE_INTERVAL": "a dead worker's tokens move as soon as its lease ends: "
    "SYNC_HEARTBEAT_TIMEOUT sets that",
    "SYNC_LEADER_LOCK_TIMEOUT": "there is no leader lock to wait for (a plan is a fenced "
    "write; the leader is the oldest live worker): nothing replaces it",
    "SYNC_HEALTH_CHECK_INTERVAL": "health is judged at every heartbeat "
    "(SYNC_HEARTBEAT_INTERVAL): read it with job.am_i_healthy() or /health/ready",
    "SYNC_LOCK_ORPHAN_WARNING": "`jobsync status` reports the tokens whose locks match no "
    "live worker, at once",
}
"""Variable -> why it is refused and what replaces it."""

_POSTGRES = {"postgres", "postgresql"}
_TRUE = {"1", "true", "yes", "on"}
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,40}")


def refusal(env: Mapping[str, str]) -> ConfigError | None:
    """The error for the first original setting ``env`` holds that jobsync refuses."""
    for var, why in REFUSED.items():
        if var in env:
            return _refused(var, env[var], why)
    profile = env.get("SYNC_SQL_PROFILE")
    if profile is not None and profile.strip().lower() not in _POSTGRES:
        why = "set SYNC_SQL_URL to the database's URL (postgresql://... or sqlite:///path)"
        return _refused("SYNC_SQL_PROFILE", profile, why)
    locks = env.get("SYNC_LOCKS_ENABLED")
    if locks is not None and locks.strip().lower() not in _TRUE:
        why = (
            "locks are always on: pass no lock_provider, and `jobsync locks clear --all` "
            "drops stored ones"
        )
        return _refused("SYNC_LOCKS_ENABLED", locks, why)
    return None


def _refused(var: str, value: str, why: str) -> ConfigError:
    return ConfigError(
        f"{var}={value!r} is a setting of the original jobsync that this jobsync does not "
        f"take: {why}; remove it from the environment"
    )


def check_prefix(appname: object, what: str) -> str:
    """``appname`` if it can be a table prefix, else ConfigError naming ``what``."""
    if not isinstance(appname, str) or not _PREFIX.fullmatch(appname):
        raise ConfigError(
            f"{what} (the table prefix) must be a lowercase letter or underscore "
            f"then up to 40 of [a-z0-9_], got {appname!r}"
        )
    return appname


def with_appname(url: str, env: Mapping[str, str]) -> str:
    """``url`` with ``SYNC_SQL_APPNAME`` as its table prefix, if the variable is set."""
    appname = env.get("SYNC_SQL_APPNAME")
    if appname is None:
        return url
    check_prefix(appname, "SYNC_SQL_APPNAME")
    parts = urlsplit(url)
    if parts.scheme.lower() not in _POSTGRES:
        if appname == "sync_":
            return url
        raise ConfigError(
            f"SYNC_SQL_APPNAME={appname!r} needs PostgreSQL: the tables of a "
            f"{parts.scheme or 'non-URL'} database are always named sync_*"
        )
    given = dict(parse_qsl(parts.query)).get("jobsync_prefix")
    if given is not None:
        if given != appname:
            raise ConfigError(
                f"SYNC_SQL_APPNAME={appname!r} and the URL's jobsync_prefix={given!r} "
                "disagree: keep one"
            )
        return url
    return url + ("&" if parts.query else "?") + f"jobsync_prefix={appname}"
