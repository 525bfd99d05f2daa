"""Locks -> pins: which ordered pattern list decides each token.

Law (docs/PROTOCOL.md section 2, "Node patterns"): a lock pins the whole token its task
hashes to.  When locks with *different* pattern lists map to one token, the
earliest ``(created_at, task_key)`` decides and the others are reported as
conflicts; identical lists on one token are no conflict.  Expired locks
(``expires_at <= now``) pin nothing.  Pure: ``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import attrs


class LockLike(Protocol):
    @property
    def task_key(self) -> str: ...
    @property
    def token(self) -> int: ...
    @property
    def patterns(self) -> tuple[str, ...]: ...
    @property
    def created_at(self) -> float: ...
    @property
    def expires_at(self) -> float | None: ...


@attrs.frozen(kw_only=True)
class LockConflict:
    """Locks on one token whose pattern lists differ; ``winner`` decides."""

    token: int
    winner: str
    losers: tuple[str, ...]


@attrs.frozen(kw_only=True)
class ResolvedLocks:
    pins: Mapping[int, tuple[str, ...]]
    conflicts: tuple[LockConflict, ...]


def resolve_locks(locks: Iterable[LockLike], now: float | None = None) -> ResolvedLocks:
    """Map each locked token to its deciding pattern list and report conflicts."""
    by_token: dict[int, list[LockLike]] = {}
    for lock in locks:
        if now is not None and lock.expires_at is not None and lock.expires_at <= now:
            continue
        by_token.setdefault(lock.token, []).append(lock)
    pins: dict[int, tuple[str, ...]] = {}
    conflicts: list[LockConflict] = []
    for token in sorted(by_token):
        group = sorted(by_token[token], key=lambda lk: (lk.created_at, lk.task_key))
        winner = group[0]
        pins[token] = tuple(winner.patterns)
        losers = tuple(lk.task_key for lk in group[1:] if tuple(lk.patterns) != pins[token])
        if losers:
            conflicts.append(LockConflict(token=token, winner=winner.task_key, losers=losers))
    return ResolvedLocks(pins=pins, conflicts=tuple(conflicts))


def conflicting_keys(resolved: ResolvedLocks) -> Mapping[str, str]:
    """task_key of every losing lock -> task_key of the lock that decides its token."""
    out: dict[str, str] = {}
    for conflict in resolved.conflicts:
        for loser in conflict.losers:
            out[loser] = conflict.winner
    return out
