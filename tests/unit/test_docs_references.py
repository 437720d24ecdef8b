"""The repository's documents name only files that are in the repository.

Scanned: every Markdown file but the changelog (a history may name files since removed).
Checked: relative links, backticked repository paths (`gateway/web/api.py`, `examples/`),
and any other `*.md` named in the text (such as notes kept outside the repository).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP = {"CHANGELOG.md"}
# certs/ and data/ hold files made at run time (git-ignored), so they are not checked.
TOP = ("gateway/", "tests/", "static_js/", "examples/", "bench/", "deploy/", ".ci/")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\n]+)`")
_PATHLIKE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./-]*")
_FILE_EXT = re.compile(r"\.(py|md|toml|js|json|conf|yaml|yml|cfg|txt|html|sh)$")
_MD_WORD = re.compile(r"(?<![\w/.`-])([A-Za-z0-9_-]+\.md)\b")


def documents() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed if Path(name).name not in SKIP]


def _exists(ref: str, doc: Path) -> bool:
    ref = ref.split("#", 1)[0].split("?", 1)[0]
    if not ref:
        return True
    return (doc.parent / ref).exists() or (ROOT / ref).exists()


def missing_references(doc: Path) -> list[str]:
    """Return every reference in `doc` to a file or folder the repository lacks."""
    text = doc.read_text()
    missing: list[str] = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor
        if not _exists(target, doc):
            missing.append(target)
    for span in _CODE.findall(text):
        if not _PATHLIKE.fullmatch(span) or "://" in span:
            continue
        looks_like_path = span.startswith(TOP) or (
            "/" in span and _FILE_EXT.search(span) is not None
        )
        if looks_like_path and not _exists(span, doc):
            missing.append(span)
    prose = _CODE.sub("", text)
    for name in _MD_WORD.findall(prose):
        if not _exists(name, doc) and not list(ROOT.glob(f"**/{name}")):
            missing.append(name)
    return sorted(set(missing))


def test_scanner_finds_missing_files(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "see [a](nope/a.md), `gateway/web/gone.py`, `gateway/web/api.py`,"
        " [b](https://example.com/x.md) and notes.md §3; `data/signalgate.db` is made at run time"
        " but `examples/none.toml` is not"
    )
    assert missing_references(doc) == [
        "examples/none.toml",
        "gateway/web/gone.py",
        "nope/a.md",
        "notes.md",
    ]


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_document_names_only_files_in_the_repository(doc: Path) -> None:
    assert missing_references(doc) == []
