"""Node patterns with PostgreSQL LIKE semantics, exactly.

Law: ``match_pattern(p, name)`` is True iff PostgreSQL's ``name LIKE p``
(default escape, UTF-8 database) is true:

- ``%`` matches any run of characters (including none and newlines);
- ``_`` matches exactly one character (one code point, newline included);
- a backslash makes the next character literal (``\\%``, ``\\_``, ``\\\\``);
- everything else matches itself, case-sensitively, and the match covers the
  whole name.

A pattern that ends in an unescaped backslash is refused by
``validate_pattern``, as PostgreSQL refuses it ("LIKE pattern must not end
with escape character").  Patterns are compiled to anchored regular
expressions once; the cache is bounded (``lru_cache``) so a stream of
distinct patterns cannot grow memory without limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from jobsync.core.errors import InvalidNodeName, InvalidPattern

PATTERN_CACHE_SIZE = 4096


def validate_pattern(pattern: object) -> str:
    """Return ``pattern`` if it is a valid LIKE pattern, else raise InvalidPattern.

    The empty pattern is refused: it matches only the empty name, which no node
    may have, so a token pinned to it would stay unowned for good."""
    if not isinstance(pattern, str):
        raise InvalidPattern(f"pattern must be a string, got {pattern!r}")
    if not pattern:
        raise InvalidPattern(
            "pattern '' matches no node (node names are never empty): "
            "use '%' for any node, or a name such as 'gpu-%'"
        )
    _compile(pattern)
    return pattern


def validate_node_name(name: object) -> str:
    """Return ``name`` if it is a non-empty string without NUL, else raise InvalidNodeName."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidNodeName(f"node name must be a non-empty string without NUL, got {name!r}")
    return name


def match_pattern(pattern: str, node_name: str) -> bool:
    """True iff ``node_name LIKE pattern`` in PostgreSQL."""
    if not isinstance(node_name, str):
        raise InvalidNodeName(f"node name must be a string, got {node_name!r}")
    if not isinstance(pattern, str):
        raise InvalidPattern(f"pattern must be a string, got {pattern!r}")
    return _compile(pattern)(node_name) is not None


@lru_cache(maxsize=PATTERN_CACHE_SIZE)
def _compile(pattern: str) -> Callable[[str], re.Match[str] | None]:
    parts: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 == n:
                raise InvalidPattern(
                    f"pattern {pattern!r} ends with an unescaped backslash "
                    "(PostgreSQL refuses it too)"
                )
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "%":
            if not parts or parts[-1] != ".*":  # %% is %; keeps backtracking linear
                parts.append(".*")
        elif ch == "_":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.DOTALL).fullmatch
