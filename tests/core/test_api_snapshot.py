"""The public names and signatures of jobsync.core are a promise to other schedulers.

A change here is an API change: update the snapshot on purpose, and say so in
the changelog.
"""

from __future__ import annotations

import inspect

import attrs

import jobsync.core as core

FUNCTIONS = {
    "canonical": "(task_id: 'object') -> 'str'",
    "holding": (
        "(row: 'NodeRecord | None', incarnation: 'int | None', now: 'float') "
        "-> 'tuple[Hold, float | None]'"
    ),
    "is_live": "(row: 'NodeRecord', now: 'float') -> 'bool'",
    "lease_expired": "(row: 'NodeRecord | None', incarnation: 'int', now: 'float') -> 'bool'",
    "oldest_live": "(nodes: 'Iterable[NodeRecord]', now: 'float') -> 'NodeRecord | None'",
    "lower_bound_moves": (
        "(total_tokens: 'int', owners: 'Mapping[int, str] | Sequence[str | None]', "
        "nodes: 'Iterable[str]', capacities: 'Mapping[str, float] | None' = None) -> 'int'"
    ),
    "match_pattern": "(pattern: 'str', node_name: 'str') -> 'bool'",
    "plan": (
        "(total_tokens: 'int', owners: 'Mapping[int, str] | Sequence[str | None]', "
        "nodes: 'Iterable[str]', locks: 'Mapping[int, Sequence[str]] | None' = None, "
        "capacities: 'Mapping[str, float] | None' = None) -> 'Plan'"
    ),
    "resolve_locks": "(locks: 'Iterable[LockLike]', now: 'float | None' = None) -> 'ResolvedLocks'",
    "token_for": (
        "(task_id: 'object', total_tokens: 'int' = 10000, hash_function: 'str' = 'xxh3') -> 'int'"
    ),
    "token_function": (
        "(total_tokens: 'int' = 10000, hash_function: 'str' = 'xxh3') -> 'Callable[[object], int]'"
    ),
    "transition": "(state: 'NodeState', event: 'NodeEvent') -> 'NodeState'",
    "validate_hash_function": "(hash_function: 'object') -> 'str'",
    "validate_node_name": "(name: 'object') -> 'str'",
    "validate_pattern": "(pattern: 'object') -> 'str'",
    "validate_total_tokens": "(total_tokens: 'object') -> 'int'",
}
CLASSES = {
    "JobSyncError",
    "Hold",
    "LockConflict",
    "NodeRecord",
    "NodeEvent",
    "NodeState",
    "Plan",
    "ResolvedLocks",
}
CONSTANTS = {"DEFAULT_HASH": "xxh3", "DEFAULT_TOTAL_TOKENS": 10_000}
PLAN_FIELDS = {"assignment", "moves", "unowned", "total_tokens", "nodes"}


def test_exported_names_are_exactly_the_snapshot() -> None:
    assert set(core.__all__) == set(FUNCTIONS) | CLASSES | set(CONSTANTS) | {"HASH_FUNCTIONS"}


def test_function_signatures_are_unchanged() -> None:
    for name, expected in FUNCTIONS.items():
        assert str(inspect.signature(getattr(core, name))) == expected, name


def test_constants_and_plan_shape() -> None:
    for name, value in CONSTANTS.items():
        assert getattr(core, name) == value
    assert sorted(core.HASH_FUNCTIONS) == ["double_sha256", "md5", "sha256", "xxh3"]
    fields = {f.name for f in attrs.fields(core.Plan)}
    assert fields >= PLAN_FIELDS
    for prop in ("moved", "targets", "lower_bound"):
        assert hasattr(core.Plan, prop) or prop in fields
