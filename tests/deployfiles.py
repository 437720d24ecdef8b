"""A small reader of the repository's Dockerfile, enough for tests to check what it says.

No Docker engine runs in the tests: tests/unit/test_deploy_files.py checks the image's key
properties from the file, and tests/integration/test_packaging.py builds the wheel from exactly
the files the Dockerfile's build stage copies.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Instruction:
    keyword: str
    args: str

    def words(self) -> list[str]:
        """Exec form (JSON array) or shell-like words."""
        text = self.args.strip()
        if text.startswith("["):
            return [str(w) for w in json.loads(text)]
        return shlex.split(text)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for inst in self.all("ENV"):
            for word in inst.words():
                key, _, value = word.partition("=")
                out[key] = value
        return out


def instructions(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions (comments dropped, continuations joined)."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        keyword, _, args = whole.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    return out


def stages(text: str) -> list[Stage]:
    """Return the build stages with ARG defaults declared before the first FROM substituted."""
    args: dict[str, str] = {}
    result: list[Stage] = []
    for inst in instructions(text):
        if inst.keyword == "ARG" and not result:
            key, _, value = inst.args.partition("=")
            args[key.strip()] = value.strip()
        elif inst.keyword == "FROM":
            words = [w for w in inst.args.split() if not w.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            result.append(Stage(base, name))
        elif result:
            result[-1].instructions.append(inst)
    return result


def context_sources(stage: Stage) -> list[str]:
    """Return what the stage COPYs from the build context (not from another stage)."""
    sources: list[str] = []
    for inst in stage.all("COPY") + stage.all("ADD"):
        words = inst.words()
        if any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words[:-1] if not w.startswith("--")]
    return sources


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore `patterns` leave `path` out: a pattern matches the path or one of
    its parent directories, component by component; `**/` matches at any depth; the last
    matching pattern wins, `!` re-includes."""
    parts = Path(path).parts
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        if glob.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, glob[3:]) for part in parts)
        else:
            want = Path(glob).parts
            hit = len(parts) >= len(want) and all(
                fnmatch.fnmatchcase(part, g) for part, g in zip(parts, want, strict=False)
            )
        if hit:
            ignored = not negate
    return ignored


def dockerignore_patterns(root: Path = ROOT) -> list[str]:
    lines = (root / ".dockerignore").read_text().splitlines()
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]
