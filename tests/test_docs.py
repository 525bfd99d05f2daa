"""Docs are part of done: links resolve, anchors exist, and the README's core example runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out: set[str] = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_and_anchors_resolve(doc: Path) -> None:
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        assert dest.exists(), f"{doc.name}: link to missing {target}"
        if anchor:
            assert anchor in anchors(dest), f"{doc.name}: no anchor #{anchor} in {dest.name}"


def _python_block(text: str, after: str) -> str:
    section = text[text.index(after) :]
    start = section.index("```python") + len("```python")
    return section[start : section.index("```", start)]


_NOTHING = object()


def _literal(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return _NOTHING


def test_readme_core_example_prints_what_it_says() -> None:
    block = _python_block((ROOT / "README.md").read_text(), "## Embedding the core")
    namespace: dict[str, object] = {}
    checked = 0
    for line in block.strip().splitlines():
        code, _, comment = line.partition("#")
        if not code.strip():
            continue
        value = _literal(comment.strip()) if comment else _NOTHING
        if value is _NOTHING:
            value = _literal(comment.split(":")[0].strip())
        if value is _NOTHING:
            exec(code, namespace)
            continue
        got = eval(code.strip(), namespace)
        assert (dict(got) if hasattr(got, "keys") else got) == value, line
        checked += 1
    assert checked >= 5
