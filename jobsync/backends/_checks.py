"""Argument checks for backend verbs.

Each function returns the value it was given (or a normalised copy) or raises
the ``InvalidArgument`` subclass that names the bad value, so a verb can check
everything before it writes anything (base.py: "bad arguments raise an
``InvalidArgument`` subclass before anything is written").  Checks that need a
site's ``total_tokens`` take it as an argument.  Written for the memory backend;
nothing in it is memory-specific, so SQL backends may share it.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from typing import TypeVar

from jobsync.backends.base import (
    MIN_PRUNE_AGE,
    ClaimRequest,
    DirectAssign,
    HistoryEntry,
    LockSpec,
    PlanCommit,
    Revoke,
)
from jobsync.core.capacity import validate_capacity
from jobsync.core.errors import InvalidArgument, InvalidLock, InvalidTaskId
from jobsync.core.patterns import validate_node_name, validate_pattern

_T = TypeVar("_T")


def site_name(site: object) -> str:
    if not isinstance(site, str) or not site or "\x00" in site:
        raise InvalidArgument(f"site must be a non-empty string without NUL, got {site!r}")
    return site


def node_name(name: object) -> str:
    return validate_node_name(name)


def optional_node_name(name: object) -> str | None:
    return None if name is None else validate_node_name(name)


def heartbeat_asks(watch: object, leading: object) -> tuple[str | None, bool]:
    """``heartbeat``'s optional questions: a node name (or None) and a bool."""
    if not isinstance(leading, bool):
        raise InvalidArgument(f"leading must be True or False, got {leading!r}")
    return optional_node_name(watch), leading


def integer(what: str, value: object, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def incarnation(value: object) -> int:
    return integer("incarnation", value)


def seconds(what: str, value: object, *, allow_zero: bool = False) -> float:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        raise InvalidArgument(f"{what} must be a {kind} finite number of seconds, got {value!r}")
    return float(value)  # type: ignore[arg-type]


MAX_COMPLETIONS = 100_000


def completion_window(after: object, limit: object) -> tuple[float, int]:
    """``read_completions``' arguments: a finite time and a batch of 1..100,000."""
    if isinstance(after, bool) or not isinstance(after, (int, float)) or not math.isfinite(after):
        raise InvalidArgument(f"after must be a finite time in seconds, got {after!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_COMPLETIONS:
        raise InvalidArgument(f"limit must be an integer in 1..{MAX_COMPLETIONS}, got {limit!r}")
    return float(after), limit


def claim_date(value: object) -> datetime.date:
    if isinstance(value, datetime.datetime) or not isinstance(value, datetime.date):
        raise InvalidArgument(f"date must be a datetime.date (not a datetime), got {value!r}")
    return value


def task_key(value: object) -> str:
    """A canonical task key: a str that PostgreSQL, SQLite and memory all store alike."""
    if not isinstance(value, str):
        raise InvalidTaskId(f"task key must be the canonical string str(task_id), got {value!r}")
    if "\x00" in value:
        raise InvalidTaskId(f"task key must not contain NUL, got {value!r}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidTaskId(f"task key {value!r} is not encodable as UTF-8") from None
    return value


def sequence(what: str, values: object) -> Sequence[object]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidArgument(f"{what} must be a sequence, got {values!r}")
    return values


def task_keys(values: object) -> tuple[str, ...]:
    return tuple(task_key(v) for v in sequence("task keys", values))


def token(value: object, total: int, error: type[InvalidArgument] = InvalidArgument) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < total:
        raise error(f"token must be an integer in [0, {total}), got {value!r}")
    return value


def claim_requests(requests: object, total: int) -> tuple[ClaimRequest, ...]:
    checked = []
    for request in sequence("claim requests", requests):
        if not isinstance(request, ClaimRequest):
            raise InvalidArgument(f"claim requests must be ClaimRequest values, got {request!r}")
        task_key(request.task_key)
        token(request.token, total)
        integer("epoch", request.epoch)
        checked.append(request)
    return tuple(checked)


def token_epochs(pairs: object, total: int) -> tuple[tuple[int, int], ...]:
    checked = []
    for pair in sequence("(token, epoch) pairs", pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InvalidArgument(f"expected a (token, epoch) pair, got {pair!r}")
        checked.append((token(pair[0], total), integer("epoch", pair[1])))
    return tuple(checked)


def lock_specs(locks: object, total: int) -> tuple[LockSpec, ...]:
    checked: list[LockSpec] = []
    seen: set[str] = set()
    for spec in sequence("locks", locks):
        if not isinstance(spec, LockSpec):
            raise InvalidLock(f"locks must be LockSpec values, got {spec!r}")
        key = task_key(spec.task_key)
        if key in seen:
            raise InvalidLock(f"task key {key!r} appears twice in one lock registration")
        seen.add(key)
        token(spec.token, total, InvalidLock)
        patterns: object = spec.patterns  # callers may pass anything despite the annotation
        if not isinstance(patterns, (tuple, list)):
            raise InvalidLock(f"lock patterns must be a tuple of strings, got {patterns!r}")
        if not patterns:
            raise InvalidLock(f"lock on task {key!r} has no patterns")
        for pattern in patterns:
            validate_pattern(pattern)
        if spec.reason is not None and not isinstance(spec.reason, str):
            raise InvalidLock(f"lock reason must be a string or None, got {spec.reason!r}")
        if spec.expires_in is not None:
            try:
                seconds("lock expires_in", spec.expires_in)
            except InvalidArgument as exc:
                raise InvalidLock(str(exc)) from None
        checked.append(spec)
    return tuple(checked)


def plan_shape(commit: object) -> PlanCommit:
    """Everything about a plan that does not need the site: types and names.

    A leader sends thousands of writes per plan, and checking each through the
    per-field checks below costs about a third of a 10,000-token commit on
    PostgreSQL.  So a well-formed plan is accepted in one flat loop that
    accepts only what the per-field checks accept; anything unusual goes to
    ``_plan_shape_thorough``, which raises the error naming the bad value (or
    accepts, and the plan goes on).
    """
    if type(commit) is PlanCommit and _writes_well_formed(commit):
        node_name(commit.leader)
        incarnation(commit.leader_incarnation)
        integer("expected_generation", commit.expected_generation)
        integer("basis", commit.basis)
        seconds("ack_timeout", commit.ack_timeout)
        if commit.history is None or type(commit.history) is HistoryEntry:
            return commit
    return _plan_shape_thorough(commit)


def _plan_shape_thorough(commit: object) -> PlanCommit:
    """``plan_shape`` field by field: each bad value raises its own error."""
    if not isinstance(commit, PlanCommit):
        raise InvalidArgument(f"commit must be a PlanCommit, got {commit!r}")
    node_name(commit.leader)
    incarnation(commit.leader_incarnation)
    integer("expected_generation", commit.expected_generation)
    integer("basis", commit.basis)
    seconds("ack_timeout", commit.ack_timeout)
    if commit.history is not None and not isinstance(commit.history, HistoryEntry):
        raise InvalidArgument(f"history must be a HistoryEntry or None, got {commit.history!r}")
    for assign in _items("assigns", commit.assigns, DirectAssign):
        _check_assign(assign)
    for revoke in _items("revokes", commit.revokes, Revoke):
        incarnation(revoke.expected_incarnation)
        integer("expected_epoch", revoke.expected_epoch)
        optional_node_name(revoke.destination)
    return commit


def _writes_well_formed(commit: PlanCommit) -> bool:
    """Every write of exactly the shape ``_plan_shape_thorough`` accepts (False: let it judge)."""
    if type(commit.assigns) is not tuple or type(commit.revokes) is not tuple:
        return False
    names: set[str] = set()
    for a in commit.assigns:
        if type(a) is not DirectAssign or not _count(a.expected_epoch):
            return False
        if a.expected_incarnation is not None and not _count(a.expected_incarnation):
            return False
        if a.owner is None:
            if a.incarnation is not None:
                return False
        elif not _count(a.incarnation) or not _name_ok(a.owner, names):
            return False
    for r in commit.revokes:
        if type(r) is not Revoke or not (
            _count(r.expected_incarnation) and _count(r.expected_epoch)
        ):
            return False
        if r.destination is not None and not _name_ok(r.destination, names):
            return False
    return True


def _count(value: object) -> bool:
    return type(value) is int and value >= 0


def _name_ok(name: object, seen: set[str]) -> bool:
    """``node_name``'s test (a non-empty str without NUL), each distinct name once."""
    if name in seen:
        return True
    if type(name) is str and name and "\x00" not in name:
        seen.add(name)
        return True
    return False


def plan_tokens(commit: PlanCommit, total: int) -> None:
    """Every written token in range, and none written twice by one plan (one flat
    loop; on the first bad token, ``_plan_tokens_thorough`` raises naming it)."""
    seen = bytearray(total)
    for writes in (commit.assigns, commit.revokes):
        for w in writes:
            t = w.token
            if type(t) is not int or not 0 <= t < total or seen[t]:
                _plan_tokens_thorough(commit, total)
                return
            seen[t] = 1


def _plan_tokens_thorough(commit: PlanCommit, total: int) -> None:
    """``plan_tokens`` write by write: the first bad token raises its own error."""
    seen: set[int] = set()
    writes: tuple[DirectAssign | Revoke, ...] = (*commit.assigns, *commit.revokes)
    for write in writes:
        t = token(write.token, total)
        if t in seen:
            raise InvalidArgument(f"token {t} is written twice by one plan")
        seen.add(t)


def _items(what: str, values: object, kind: type[_T]) -> list[_T]:
    items = []
    for item in sequence(what, values):
        if not isinstance(item, kind):
            raise InvalidArgument(f"{what} must hold {kind.__name__} values, got {item!r}")
        items.append(item)
    return items


def _check_assign(assign: DirectAssign) -> None:
    if assign.expected_incarnation is not None:
        incarnation(assign.expected_incarnation)
    integer("expected_epoch", assign.expected_epoch)
    optional_node_name(assign.owner)
    if assign.incarnation is not None:
        incarnation(assign.incarnation)
    if (assign.owner is None) != (assign.incarnation is None):
        raise InvalidArgument(
            f"DirectAssign of token {assign.token!r} needs owner and incarnation both set or "
            f"both None, got owner={assign.owner!r}, incarnation={assign.incarnation!r}"
        )


def prune_age(value: object) -> float:
    """``prune``'s age: seconds, at least ``MIN_PRUNE_AGE`` (one day)."""
    age = seconds("older_than", value)
    if age < MIN_PRUNE_AGE:
        raise InvalidArgument(
            f"older_than must be at least {MIN_PRUNE_AGE:g} seconds (one day), got {value!r}: "
            "pruning today's completions would let their tasks be claimed again"
        )
    return age


def process_id(value: object) -> str:
    """``register``'s process identity: a string without NUL, at most 200 characters."""
    if not isinstance(value, str) or "\x00" in value or len(value) > 200:
        raise InvalidArgument(
            f"process must be a string of at most 200 characters without NUL, got {value!r}"
        )
    return value


def capacity(value: object) -> float:
    """A node's capacity: a finite number from 0.001 to 1e6 (``jobsync.core.capacity``)."""
    return validate_capacity(value)


def drain_duration(value: object) -> float | None:
    """How long a drain lasts: positive finite seconds, or None for until undrained."""
    return None if value is None else seconds("drain duration", value)


def drain_note(value: object) -> str:
    """Who drained a node and why: a string without NUL, at most 500 characters."""
    if not isinstance(value, str) or "\x00" in value or len(value) > 500:
        raise InvalidArgument(
            f"drain note must be a string of at most 500 characters without NUL, got {value!r}"
        )
    return value


def known_incarnation(value: object) -> int | None:
    """``register``'s ``known``: None or an incarnation."""
    return None if value is None else integer("known", value)
