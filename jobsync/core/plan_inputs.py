"""The planner's inputs, validated before any work: node names, owners, locks.

Each function returns the value in the shape the planner works on, or raises
the ``InvalidArgument`` subclass that names the bad value.  ``forming`` says
whether there is anything to plan for yet (``minimum_nodes``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from jobsync.core.errors import DuplicateNodeName, InvalidArgument, InvalidLock, InvalidNodeName
from jobsync.core.patterns import validate_node_name, validate_pattern


def forming(
    minimum_nodes: int,
    eligible: Collection[str],
    live: Mapping[str, int],
    owners: Sequence[str | None],
    incarnations: Sequence[int | None],
) -> bool:
    """True while a site waits for ``minimum_nodes`` before it is distributed.

    ``eligible`` names the live nodes that may take tokens (not drained or
    leaving); ``live`` maps every live node to its incarnation; ``owners`` and
    ``incarnations`` are the token table's.  A site forms while fewer than
    ``minimum_nodes`` nodes are eligible and no live node holds a token: at
    its first start, or when every worker it had ended.  Once a live node
    holds a token the site is serving, and it keeps serving with whoever is
    live however few they become (as the original jobsync did: it counted
    nodes only when a worker started), down to the last one leaving.  With
    ``minimum_nodes`` 1 a site never forms.
    """
    if minimum_nodes <= 1 or len(eligible) >= minimum_nodes:
        return False
    return not any(
        owner is not None and live.get(owner) == incarnation
        for owner, incarnation in zip(owners, incarnations, strict=True)
    )


def node_names(nodes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(nodes, (str, bytes)):
        raise InvalidNodeName(f"nodes must be an iterable of names, not the string {nodes!r}")
    seen: set[str] = set()
    try:
        for name in nodes:
            validate_node_name(name)
            if name in seen:
                raise DuplicateNodeName(f"node name {name!r} appears twice in nodes")
            seen.add(name)
    except TypeError as exc:
        raise InvalidNodeName(f"nodes must be an iterable of names, got {nodes!r}") from exc
    return tuple(sorted(seen))


def owner_list(total: int, owners: object) -> list[str | None]:
    current: list[str | None]
    if isinstance(owners, Mapping):
        current = [None] * total
        for token, owner in owners.items():
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < total:
                raise InvalidArgument(f"owners: token {token!r} is not in range 0..{total - 1}")
            current[token] = owner
    elif isinstance(owners, Sequence) and not isinstance(owners, (str, bytes)):
        if len(owners) != total:
            raise InvalidArgument(
                f"owners has {len(owners)} entries, expected total_tokens={total}"
            )
        current = list(owners)
    else:
        raise InvalidArgument(f"owners must be a mapping or a sequence, got {owners!r}")
    try:
        clean = all(o is None or isinstance(o, str) for o in set(current))
    except TypeError:  # an unhashable owner
        clean = False
    if not clean:
        bad = next(o for o in current if o is not None and not isinstance(o, str))
        raise InvalidNodeName(f"owner must be a node name (str) or None, got {bad!r}")
    return current


def lock_rules(total: int, locks: object) -> dict[int, tuple[str, ...]]:
    if locks is None:
        return {}
    if not isinstance(locks, Mapping):
        raise InvalidLock(f"locks must be a mapping of token -> patterns, got {locks!r}")
    rules: dict[int, tuple[str, ...]] = {}
    checked: set[tuple[str, ...]] = set()
    for token, patterns in locks.items():
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < total:
            raise InvalidLock(f"lock on token {token!r}: not in range 0..{total - 1}")
        if isinstance(patterns, (str, bytes)) or not isinstance(patterns, Sequence):
            raise InvalidLock(f"lock on token {token}: need a list of patterns, got {patterns!r}")
        if not patterns:
            raise InvalidLock(f"lock on token {token}: empty pattern list {patterns!r}")
        key = tuple(patterns)
        try:
            fresh = key not in checked
        except TypeError:  # an unhashable pattern: validate_pattern names it
            fresh = True
        if fresh:
            for pattern in key:
                validate_pattern(pattern)
            checked.add(key)
        rules[token] = key
    return rules
