"""Every path and link README.md and docs/*.md cite exists, so the docs stay true to the tree.

Checked: relative Markdown links and images (the file, and the #anchor among the target's
headings as GitHub makes them), repository paths written in code (`tests/api/x.py::test_name`
down to the test function), package-relative module paths (`engines/musetalk/live.py`), and the
generated blocks the benchmarks write into (each opened and closed once, and every block a bench
script writes is there to be written).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Where a module path like `avatars/layout.py` may start from.
SOURCE_ROOTS = [ROOT, ROOT / "service", ROOT / "operator", ROOT / "service" / "musetalk_server",
                ROOT / "operator" / "musetalk_operator"]
# A path in code is a repository path when it starts with one of these (a fixed list: a folder
# that does not exist yet must still be recognised, and then fail).
TOP_LEVEL = ("service", "operator", "charts", "crds", "manifests", "bench", "tests", "docs", "examples",
             "scripts", "clients", ".ci")
# Paths the docs cite that other branches of the same change add (the client distribution, the
# shipped clips, the generated error and configuration pages). The test fails once they exist,
# so that this list is emptied at the merge rather than left as a hole.
PENDING_ON_OTHER_BRANCHES: set[str] = set()
# The blocks the bench scripts write with --write-docs, by page (bench/doc_blocks.py).
BENCH_BLOCKS = {
    "benchmarks.md": {"service", "load", "realtime", "musetalk-tiny", "musetalk-tiny-streams", "musetalk-full",
                      "musetalk-full-streams"},
    "lite-engine.md": {"lipsync", "lipsync-dlib", "lipsync-reverse", "lipsync-reverse-dlib", "other-voices",
                       "other-voices-voice-over"},
}

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(rf"(?<![\w./$-])((?:{'|'.join(re.escape(t) for t in TOP_LEVEL)})/[\w./%+-]*)(::\w+)?")
MODULE_PATH = re.compile(r"(?<![\w./$-])([a-z_]+/[\w/]*\.py)(?![\w/])")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
GENERATED = re.compile(r"<!-- (/?)generated:([\w-]+) -->")


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _code(text: str) -> list[str]:
    """The code of a page: its fenced blocks and its inline spans."""
    fences = FENCE.findall(text)
    return fences + CODE_SPAN.findall(FENCE.sub("", text))


def github_slugs(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown text (headings in code blocks are not headings)."""
    seen: Counter[str] = Counter()
    out = set()
    for _, title in HEADING.findall(FENCE.sub("", text)):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link in a heading counts by its text
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        out.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return out


def broken_links(doc: Path) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    problems = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            if _pending(file):
                continue
            problems.append(f"link {target}: no {path}")
        elif anchor and file.suffix == ".md" and anchor not in github_slugs(file.read_text(encoding="utf-8")):
            problems.append(f"link {target}: {file.name} has no heading #{anchor}")
    return problems


def _pending(path: Path) -> bool:
    return path.is_relative_to(ROOT) and _id(path) in PENDING_ON_OTHER_BRANCHES


def missing_paths(doc: Path) -> list[str]:
    problems = []
    for code in _code(doc.read_text(encoding="utf-8")):
        for path, test in REPO_PATH.findall(code):
            path = path.rstrip("./")
            file = ROOT / path
            if _pending(file):
                continue
            if not file.exists():
                problems.append(f"path {path}: does not exist")
            elif test and not re.search(rf"^\s*(async )?def {test[2:]}\(", file.read_text(encoding="utf-8"), re.M):
                problems.append(f"path {path}{test}: no such test function")
        for module in MODULE_PATH.findall(code):
            if module.split("/")[0] not in TOP_LEVEL and not any((r / module).exists() for r in SOURCE_ROOTS):
                problems.append(f"module {module}: not under {', '.join(_id(r) or '.' for r in SOURCE_ROOTS[1:])}")
    return problems


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_id)
def test_every_relative_link_and_anchor_exists(doc: Path) -> None:
    assert broken_links(doc) == []


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_id)
def test_every_repository_path_in_code_exists(doc: Path) -> None:
    assert missing_paths(doc) == []


def test_paths_pending_on_other_branches_are_still_missing() -> None:
    """Once a pending path exists, take it off PENDING_ON_OTHER_BRANCHES so it is checked like the rest."""
    assert sorted(p for p in PENDING_ON_OTHER_BRANCHES if (ROOT / p).exists()) == []


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_id)
def test_generated_blocks_open_and_close_once(doc: Path) -> None:
    marks = GENERATED.findall(doc.read_text(encoding="utf-8"))
    opened = [name for close, name in marks if not close]
    assert sorted(set(opened)) == sorted(opened), "a block opened twice"
    expected = [m for name in opened for m in (("", name), ("/", name))]
    assert marks == expected, "every block is closed right after it is opened, before the next opens"


def test_every_block_a_bench_script_writes_is_in_its_page() -> None:
    for page, names in BENCH_BLOCKS.items():
        text = (ROOT / "docs" / page).read_text(encoding="utf-8")
        assert sorted(n for n in names if f"<!-- generated:{n} -->" not in text) == [], page


def test_the_checks_catch_a_broken_link_a_missing_path_and_a_missing_anchor(tmp_path: Path) -> None:
    """The checks above fail on what they are for (a page outside the repository, parsed the same way)."""
    page = tmp_path / "page.md"
    page.write_text("# Top\n\n[ok](#top) [gone](#nowhere) [file](missing.md)\n\n"
                    "`bench/no_such_bench.py`, `tests/unit/test_docs_links.py::test_nope`, `engines/nope.py`\n"
                    "```\n# not a heading\n```\n")
    assert broken_links(page) == ["link #nowhere: page.md has no heading #nowhere", "link missing.md: no missing.md"]
    assert missing_paths(page) == ["path bench/no_such_bench.py: does not exist",
                                   "path tests/unit/test_docs_links.py::test_nope: no such test function",
                                   "module engines/nope.py: not under service, operator, service/musetalk_server, "
                                   "operator/musetalk_operator"]
    assert github_slugs("# A `code` heading: yes\n## A `code` heading: yes\n") == {"a-code-heading-yes",
                                                                                  "a-code-heading-yes-1"}
