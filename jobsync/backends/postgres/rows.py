"""Values in and out of the PostgreSQL backend: rows to base.py values, plans to parameters.

Rows come back with times as float seconds (``extract(epoch ...)``); some
arrive through JSON, where whole numbers are ints, hence the ``float()``s.
Plans go out as the dense or compact arrays of ``plan_queries.ASSIGN`` /
``ASSIGN_FEW``, as comma-separated text: adapting a Python list of 10,000 ints
element by element costs more than the UPDATE it feeds.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Sequence
from typing import Any, TypeVar

import attrs
from attrs import AttrsInstance

from jobsync.backends.base import (
    ClusterView,
    DirectAssign,
    LockRecord,
    LockSpec,
    NodeRecord,
    SiteInfo,
    TokenTable,
)
from jobsync.core.errors import InvalidArgument, SchemaError

Row = tuple[Any, ...]
_V = TypeVar("_V", bound=AttrsInstance)


# -- rows to values -------------------------------------------------------------
def record(cls: type[_V], row: Sequence[Any]) -> _V:
    """The value whose fields are ``row``'s columns, in the order the fields are declared."""
    return cls(**dict(zip((f.name for f in attrs.fields(cls)), row, strict=True)))


def site_info(row: Row) -> SiteInfo:
    return record(SiteInfo, row[:7])


def node(row: Sequence[Any]) -> NodeRecord:
    # float(): rows read through JSON give ints for whole numbers
    return NodeRecord(
        name=row[0],
        incarnation=row[1],
        registered_at=float(row[2]),
        last_heartbeat=float(row[3]),
        lease_timeout=float(row[4]),
        state=row[5],
        fence_until=float(row[6]),
        process=row[7],
        capacity=float(row[8]),
        drained_at=None if row[9] is None else float(row[9]),
        drain_until=None if row[10] is None else float(row[10]),
        drain_note=row[11],
    )


def lock(row: Sequence[Any]) -> LockRecord:
    return LockRecord(
        task_key=row[0],
        token=row[1],
        patterns=tuple(row[2]),
        reason=row[3],
        created_by=row[4],
        created_at=float(row[5]),
        expires_at=None if row[6] is None else float(row[6]),
    )


def lock_order(record: LockRecord) -> tuple[float, str]:
    return (record.created_at, record.task_key)


def cluster_view(row: Row) -> ClusterView:
    now, info = row[0], site_info(row[1:8])
    nodes = [node(n) for n in (row[8] or ())]
    nodes.sort(key=lambda n: (n.registered_at, n.name))
    locks = sorted((lock(lk) for lk in (row[9] or ())), key=lock_order)
    ids, owners, incs, epochs, dests, deadlines = (list(col or ()) for col in row[10:16])
    if ids != list(range(len(ids))):  # array_agg kept the input order: check, never trust
        order = sorted(range(len(ids)), key=ids.__getitem__)
        owners, incs, epochs, dests, deadlines = (
            [col[i] for i in order] for col in (owners, incs, epochs, dests, deadlines)
        )
    if len(ids) != info.total_tokens:
        raise SchemaError(
            f"site {info.site!r} has {len(ids)} token rows, expected {info.total_tokens}"
        )
    tokens = TokenTable(
        owner=tuple(owners),
        incarnation=tuple(incs),
        epoch=array("q", epochs),
        pending_to=tuple(dests),
        pending_deadline=tuple(deadlines),
    )
    return ClusterView(now=now, site=info, nodes=tuple(nodes), tokens=tokens, locks=tuple(locks))


# -- plans to parameters ---------------------------------------------------------
def dense_assigns(site: str, assigns: Sequence[DirectAssign], total: int) -> dict[str, Any]:
    """The ASSIGN parameters: dense arrays indexed by token (see plan_queries.ASSIGN)."""
    exp_incs, exp_epochs, owner_ix, incs = [-1] * total, [-1] * total, [0] * total, [-1] * total
    names: dict[str, int] = {}
    for a in assigns:
        t = a.token
        exp_epochs[t] = a.expected_epoch
        if a.expected_incarnation is not None:
            exp_incs[t] = a.expected_incarnation
        if a.owner is not None and a.incarnation is not None:
            owner_ix[t] = names.setdefault(a.owner, len(names) + 1)
            incs[t] = a.incarnation
    return {
        "site": site,
        "names": list(names),
        "owner_ix": csv(owner_ix),
        "incs": csv(incs),
        "exp_incs": csv(exp_incs),
        "exp_epochs": csv(exp_epochs),
    }


def compact_assigns(site: str, assigns: Sequence[DirectAssign]) -> dict[str, Any]:
    """The ASSIGN_FEW parameters: one entry per written token."""
    names: dict[str, int] = {}
    owner_ix = [
        0 if a.owner is None else names.setdefault(a.owner, len(names) + 1) for a in assigns
    ]
    return {
        "site": site,
        "names": list(names),
        "tokens": csv([a.token for a in assigns]),
        "exp_incs": csv(
            [-1 if a.expected_incarnation is None else a.expected_incarnation for a in assigns]
        ),
        "exp_epochs": csv([a.expected_epoch for a in assigns]),
        "owner_ix": csv(owner_ix),
        "incs": csv([-1 if a.incarnation is None else a.incarnation for a in assigns]),
    }


def csv(values: Sequence[int]) -> str:
    return ",".join(map(str, values))


def check_lock_text(spec: LockSpec) -> None:
    """PostgreSQL text cannot hold NUL: refuse it as bad input, before writing."""
    texts = (*spec.patterns, spec.reason or "")
    if any("\x00" in text for text in texts):
        raise InvalidArgument(
            f"lock on task {spec.task_key!r}: patterns and reason cannot hold NUL"
        )


def lock_params(site: str, creator: str, specs: Sequence[LockSpec]) -> dict[str, Any]:
    return {
        "site": site,
        "creator": creator,
        "keys": [spec.task_key for spec in specs],
        "tokens": [spec.token for spec in specs],
        "reasons": [spec.reason for spec in specs],
        "expires": [spec.expires_in for spec in specs],
        "patterns": json.dumps([list(spec.patterns) for spec in specs]),
    }
