"""Every `§` reference in the code points at a section that exists in `docs/`.

A reference is `docs/<page>.md` followed by a chain of sections: `§N[.M…]`, a range `§A–B` or
`§A–§B` (both ends must exist), and further members joined by `,` or `and` (`§2, §7.5`,
`§6.2 and §6.3`). A section exists when its page has a heading `#… §N[.M…] Title`. A bare chain (no
page before it) refers to the pages its file cites, and must exist in at least one of them; inside
`docs/`, to the page itself. The old spec file names, which are not in the repository, must not
come back.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ("architecture", "lifecycle", "rl", "runtime")
SOURCE_DIRS = ("esper", "tests", "properties", "benchmarks", "examples")
OLD_SPECS = tuple(page.upper() for page in PAGES)  # the spec names the code cited before docs/ existed

NUMBER = r"\d+(?:\.\d+)*"
SECTION = rf"§{NUMBER}(?:\s*[–-]\s*§?{NUMBER})?"  # one section or a range
CHAIN = rf"{SECTION}(?:(?:\s*,\s*|\s+and\s+){SECTION})*"
PAGE = rf"(?:docs/)?\b(?P<page>{'|'.join(PAGES)})\.md"
REFERENCE = re.compile(rf"(?:{PAGE}\s*)?(?P<chain>{CHAIN})")
PAGE_MENTION = re.compile(PAGE)
HEADING = re.compile(rf"^#+\s*§(?P<number>{NUMBER})\b", re.MULTILINE)
OLD_NAME = re.compile(rf"(?<![\w/])(?:{'|'.join(OLD_SPECS)})\.md")


def headings(page: str) -> set[str]:
    return set(HEADING.findall((DOCS / f"{page}.md").read_text(encoding="utf-8")))


def sections_of(chain: str) -> list[str]:
    """Every section number a chain names: each member, both ends of each range."""
    return re.findall(NUMBER, chain)


def source_files() -> Iterator[Path]:
    for name in SOURCE_DIRS:
        folder = ROOT / name
        if folder.is_dir():
            yield from sorted(folder.rglob("*.py"))
    yield ROOT / "README.md"
    yield from sorted(DOCS.glob("*.md"))


def dangling(path: Path, text: str, sections: dict[str, set[str]]) -> list[str]:
    """`file:line: reference` for every section this file cites that its page lacks."""
    cited = {m.group("page") for m in PAGE_MENTION.finditer(text)}
    if path.parent == DOCS and path.stem in PAGES:
        cited = {path.stem}
    out = []
    for match in REFERENCE.finditer(text):
        pages = [match.group("page")] if match.group("page") else sorted(cited)
        for number in sections_of(match.group("chain")):
            if not any(number in sections[page] for page in pages):
                line = text.count("\n", 0, match.start()) + 1
                where = "/".join(pages) or "no page cited in this file"
                out.append(f"{path.relative_to(ROOT)}:{line}: §{number} not in docs/{where}")
    return out


def test_every_page_has_numbered_sections():
    for page in PAGES[1:]:
        assert {"1", "2"} <= headings(page), f"docs/{page}.md lost its numbered headings"


def test_chains_name_every_member_and_both_ends_of_ranges():
    match = REFERENCE.search("see docs/lifecycle.md §1.2–§1.5, §3 and §9 for the rules")
    assert match is not None and match.group("page") == "lifecycle"
    assert sections_of(match.group("chain")) == ["1.2", "1.5", "3", "9"]
    match = REFERENCE.search("(docs/runtime.md §1.3–1.4, §10). Next sentence §2.")
    assert sections_of(match.group("chain")) == ["1.3", "1.4", "10"]


def test_a_missing_section_is_reported():
    sections = {page: headings(page) for page in PAGES}
    fake, mark = ROOT / "esper" / "fake.py", "§"  # built, so this file's own text cites nothing missing
    problems = dangling(fake, f'"""docs/rl.md {mark}7.5 and {mark}99; a bare {mark}98."""', sections)
    assert problems == [f"esper/fake.py:1: {mark}99 not in docs/rl", f"esper/fake.py:1: {mark}98 not in docs/rl"]


def test_every_section_reference_resolves():
    sections = {page: headings(page) for page in PAGES}
    problems = []
    for path in source_files():
        problems += dangling(path, path.read_text(encoding="utf-8"), sections)
    assert not problems, "references to sections docs/ does not have:\n" + "\n".join(problems)


@pytest.mark.parametrize("old", OLD_SPECS)
def test_no_reference_to_the_old_spec_files_remains(old: str):
    hits = []
    for path in source_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(m.group() == f"{old}.md" for m in OLD_NAME.finditer(line)):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, f"{old}.md is not in the repository; cite docs/{old.lower()}.md:\n" + "\n".join(hits)
