"""Task, and the small pure pieces of the Job: argument checks, snapshot holders,
lock specs from the README's tuples, and the dictionaries operators read.

Nothing here does I/O or keeps state beyond the object it builds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from jobsync.backends.base import AuditRecord, LockRecord, LockSpec
from jobsync.core.errors import InvalidArgument, InvalidLock, InvalidPattern
from jobsync.core.hashing import canonical
from jobsync.core.locks import conflicting_keys, resolve_locks
from jobsync.core.patterns import validate_pattern
from jobsync.runtime.config import CoordinationConfig, Settings
from jobsync.runtime.config import config as default_settings
from jobsync.runtime.snapshot import ClaimSnapshot


class Task:
    """A unit of work.  Identity is the canonical string of ``id``: Task(1) == Task('1')."""

    __slots__ = ("id", "key", "name")

    def __init__(self, id: object, name: str | None = None) -> None:
        self.id = id
        self.name = name
        self.key = canonical(id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: Task) -> bool:
        return self.key < other.key

    def __repr__(self) -> str:
        return f"Task({self.id!r})" if self.name is None else f"Task({self.id!r}, {self.name!r})"


class Fixed:
    """A snapshot holder that never changes (observers, Jobs not entered yet)."""

    def __init__(self, snapshot: ClaimSnapshot) -> None:
        self.snapshot = snapshot


class Standalone:
    """Coordination disabled: this process may claim everything."""

    def __init__(self, total_tokens: int) -> None:
        self.snapshot = ClaimSnapshot(
            owned=bytearray(b"\x01" * total_tokens),
            tokens=frozenset(range(total_tokens)),
            epochs={},
            lease_deadline=float("inf"),
            incarnation=None,
            version=1,
        )


def task_key(task: object) -> str:
    """A task's canonical key (a Task's, or ``canonical(task)``)."""
    return task.key if type(task) is Task else canonical(task)


def check_seconds(name: str, value: object, allow_zero: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (value >= 0 if allow_zero else value > 0):  # type: ignore[operator]
        kind = "non-negative" if allow_zero else "positive"
        raise InvalidArgument(f"{name} must be a {kind} number of seconds, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_port(port: object, observer: bool) -> int | None:
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgument(f"http_port must be a TCP port (0 picks a free one), got {port!r}")
    if observer:
        raise InvalidArgument("http_port needs a worker: an observer has no health to report")
    return port


def coordination_of(source: object) -> CoordinationConfig:
    if isinstance(source, Settings):
        return source.coordination
    return default_settings.coordination


def lock_spec(
    item: object, token_of: Callable[[str], int], expires_in_days: float | None = None
) -> LockSpec:
    """A ``(task_id, pattern_or_patterns[, reason])`` tuple, checked, as a LockSpec."""
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise InvalidLock(f"a lock is (task_id, pattern_or_patterns, reason), got {item!r}")
    task_id, patterns, reason = (*item, None) if len(item) == 2 else item
    listed = [patterns] if isinstance(patterns, str) else patterns
    if not isinstance(listed, (list, tuple)):
        raise InvalidPattern(
            f"lock on {task_id!r}: patterns must be a string or a list of strings, got {patterns!r}"
        )
    if not listed:
        raise InvalidLock(f"lock on {task_id!r} needs one or more patterns, got {patterns!r}")
    checked = tuple(validate_pattern(p) for p in listed)
    if reason is not None and not isinstance(reason, str):
        raise InvalidLock(f"lock reason must be a string or None, got {reason!r}")
    key = task_key(task_id)
    return LockSpec(
        task_key=key,
        token=token_of(key),
        patterns=checked,
        reason=reason,
        expires_in=None if expires_in_days is None else expires_in_days * 86_400.0,
    )


def lock_views(records: Iterable[LockRecord]) -> list[tuple[LockRecord, dict[str, object]]]:
    """Each lock with the fields every view of it shows, the task whose lock decides
    its token on conflict (``conflict_with``) included."""
    records = tuple(records)
    losers = conflicting_keys(resolve_locks(records))
    return [
        (
            r,
            {
                "task_id": r.task_key,
                "reason": r.reason,
                "created_by": r.created_by,
                "created_at": r.created_at,
                "expires_at": r.expires_at,
                "conflict_with": losers.get(r.task_key),
            },
        )
        for r in records
    ]


def lock_rows(records: Iterable[LockRecord]) -> list[dict[str, object]]:
    """``list_locks()``'s rows."""
    return [
        {
            **row,
            "token_id": r.token,
            "node_pattern": r.patterns[0],
            "node_patterns": list(r.patterns),
        }
        for r, row in lock_views(records)
    ]


def audit_rows(records: Iterable[AuditRecord]) -> list[dict[str, object]]:
    """``get_audit()``'s rows."""
    return [
        {
            "task_id": r.task_key,
            "date": r.date,
            "node": r.node,
            "token_id": r.token,
            "epoch": r.epoch,
            "status": r.status,
            "claimed_at": r.claimed_at,
            "completed_at": r.completed_at,
        }
        for r in records
    ]
