"""match_pattern: PostgreSQL LIKE semantics, table-driven (the server check is in backends)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobsync.core import match_pattern, validate_pattern
from jobsync.core.patterns import PATTERN_CACHE_SIZE, _compile
from jobsync.errors import InvalidNodeName, InvalidPattern

CASES = [
    # (pattern, name, matches)
    ("gpu-%", "gpu-01", True),
    ("gpu-%", "gpu-", True),
    ("gpu-%", "cpu-01", False),
    ("gpu-%", "GPU-01", False),  # case-sensitive
    ("gpu-_", "gpu-1", True),
    ("gpu-_", "gpu-12", False),
    ("gpu-_", "gpu-", False),
    ("%", "", True),
    ("", "", True),
    ("", "a", False),
    ("_", "", False),
    ("_", "é", True),  # one code point
    ("_", "\U0001f680", True),  # one code point outside the BMP
    ("__", "\U0001f680", False),
    ("a%b", "a\nb", True),  # % matches a newline
    ("a_b", "a\nb", True),  # _ matches a newline
    (r"a\%b", "a%b", True),
    (r"a\%b", "axb", False),
    (r"a\_b", "a_b", True),
    (r"a\_b", "axb", False),
    ("a\\\\b", "a\\b", True),  # escaped backslash
    (r"\a", "a", True),  # escaping an ordinary character is that character
    ("a.b", "a.b", True),  # regex metacharacters are literal
    ("a.b", "axb", False),
    ("(x)+", "(x)+", True),
    ("%%%", "anything", True),
    ("%a%a%a%a%a%b", "a" * 40, False),
    ("worker-%-eu", "worker-17-eu", True),
    ("worker-%-eu", "worker-17-us", False),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), CASES)
def test_like_table(pattern: str, name: str, expected: bool) -> None:
    assert match_pattern(pattern, name) is expected


def _oracle(pattern: str, name: str) -> bool:
    """An independent LIKE matcher: dynamic programming over code points."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            tokens.append(("lit", pattern[i + 1]))
            i += 2
            continue
        tokens.append(("any", "") if ch == "%" else ("one", "") if ch == "_" else ("lit", ch))
        i += 1
    reach = {0}
    for ch in name:
        nxt: set[int] = set()
        for state in _close(reach, tokens):
            if state < len(tokens):
                kind, lit = tokens[state]
                if kind == "any":
                    nxt.add(state)
                elif kind == "one" or lit == ch:
                    nxt.add(state + 1)
        reach = nxt
    return len(tokens) in _close(reach, tokens)


def _close(states: set[int], tokens: list[tuple[str, str]]) -> set[int]:
    out = set(states)
    stack = list(states)
    while stack:
        s = stack.pop()
        if s < len(tokens) and tokens[s][0] == "any" and s + 1 not in out:
            out.add(s + 1)
            stack.append(s + 1)
    return out


ALPHABET = st.sampled_from(list("ab%_\\\n.é*"))


@given(st.text(ALPHABET, max_size=8), st.text(st.sampled_from(list("ab%_\\\n.é*")), max_size=8))
def test_agrees_with_independent_oracle(pattern: str, name: str) -> None:
    try:
        validate_pattern(pattern)
    except InvalidPattern:
        assert pattern == "" or re.search(r"(?<!\\)(\\\\)*\\$", pattern)
        return
    assert match_pattern(pattern, name) is _oracle(pattern, name)


@pytest.mark.parametrize("bad", ["gpu\\", "a\\\\\\", "\\"])
def test_trailing_escape_is_refused(bad: str) -> None:
    with pytest.raises(InvalidPattern, match="unescaped backslash"):
        validate_pattern(bad)
    with pytest.raises(InvalidPattern):
        match_pattern(bad, "x")


def test_the_empty_pattern_is_refused() -> None:
    """'' matches only the empty name, which no node has: its token would be stranded."""
    with pytest.raises(InvalidPattern, match="pattern '' matches no node"):
        validate_pattern("")


def test_trailing_escaped_backslash_is_fine() -> None:
    assert validate_pattern("a\\\\") == "a\\\\"
    assert match_pattern("a\\\\", "a\\")


@pytest.mark.parametrize("bad", [None, 3, b"gpu-%", ["gpu-%"]])
def test_non_string_pattern_is_named(bad: object) -> None:
    with pytest.raises(InvalidPattern, match="must be a string"):
        validate_pattern(bad)
    with pytest.raises(InvalidPattern):
        match_pattern(bad, "x")  # type: ignore[arg-type]


def test_non_string_name_is_named() -> None:
    with pytest.raises(InvalidNodeName, match="42"):
        match_pattern("%", 42)  # type: ignore[arg-type]


def test_compiled_cache_is_bounded() -> None:
    _compile.cache_clear()
    for i in range(PATTERN_CACHE_SIZE + 100):
        match_pattern(f"node-{i}%", "node-1")
    assert _compile.cache_info().currsize == PATTERN_CACHE_SIZE
