"""The repository explains itself: every relative link of its Markdown files resolves to a file inside it,
and no file names a document that lives beside the repository. Reads the repository's own files only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# not the repository's documents: virtual environments, caches, and what runs write (git-ignored)
SKIPPED_DIRS = {"build", "out", "runs", "node_modules", "__pycache__"}

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|//|#)", re.IGNORECASE)  # http:, mailto:, //host, #anchor


def _kept(path: Path) -> bool:
    parts = path.relative_to(ROOT).parts[:-1]
    return not any(p.startswith(".") or p in SKIPPED_DIRS or p.endswith(".egg-info") for p in parts)


MARKDOWN = sorted(p for p in ROOT.rglob("*.md") if _kept(p))


def relative_links(text: str) -> list[str]:
    """The link targets of Markdown text that point at files, without fragments; code is not Markdown."""
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    targets = INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)
    return [t.split("#", 1)[0] for t in targets if not EXTERNAL.match(t)]


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in relative_links(document.read_text(encoding="utf-8")):
        resolved = (document.parent / target).resolve()
        if not resolved.is_relative_to(root):
            problems.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            problems.append(f"{target} (missing)")
    return problems


def test_the_repository_has_its_documents():
    names = {p.relative_to(ROOT).as_posix() for p in MARKDOWN}
    assert {"README.md", "CHANGELOG.md", "docs/design.md", "docs/data.md"} <= names


@pytest.mark.parametrize("document", MARKDOWN, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_inside_the_repository(document):
    assert broken_links(document) == []


def test_link_parsing_on_known_text(tmp_path):
    text = (
        "See [design](docs/design.md#4-metrics), ![shot](docs/shot.png \"title\"), [web](https://x.org/a.md),\n"
        "[anchor](#layout), `[not](a-link.md)` and\n```bash\necho [no](link.md)\n```\n[ref]: ../outside.md\n"
    )
    assert relative_links(text) == ["docs/design.md", "docs/shot.png", "../outside.md"]
    (tmp_path / "repo" / "docs").mkdir(parents=True)
    (tmp_path / "repo" / "docs" / "design.md").write_text("x")
    document = tmp_path / "repo" / "README.md"
    document.write_text(text)
    assert broken_links(document, (tmp_path / "repo").resolve()) == [
        "docs/shot.png (missing)", "../outside.md (outside the repository)"]


def test_no_file_names_a_document_beside_the_repository():
    # the design and style notes the project started from live beside the repository, not in it: code and
    # documents cite docs/design.md instead
    beside = re.compile("|".join([r"\.\./" + "shared", "DESIGN" + r"(\.md)? §", "STYLE" + r"(\.md| rule)"]))
    files = [p for p in (*ROOT.rglob("*.py"), *MARKDOWN) if _kept(p)]
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files for m in beside.finditer(p.read_text("utf-8"))]
    assert found == []
