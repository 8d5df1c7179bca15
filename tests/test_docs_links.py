"""The documentation holds together: every relative link of README.md, CHANGELOG.md and docs/*.md
leads to a file of the repository (and to a heading, when it names one), the README stays short
with a two-command set-up block, and its Quick start prints what the README says it prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 290

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code removed."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(INLINE_CODE.sub("", line))
    return lines


def fenced_blocks(text: str) -> list[tuple[str, str, list[str]]]:
    """(heading the block sits under, info string, lines) of every fenced code block."""
    blocks, heading, current = [], "", None
    for line in text.splitlines():
        match = FENCE.match(line)
        if current is None:
            if match:
                current = (heading, line.strip()[3:].strip(), [])
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif match:
            blocks.append(current)
            current = None
        else:
            current[2].append(line)
    return blocks


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file (lower case, punctuation dropped,
    spaces to hyphens, repeats numbered)."""
    found, counts = set(), {}
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        repeat = counts.get(slug, 0)
        counts[slug] = repeat + 1
        found.add(f"{slug}-{repeat}" if repeat else slug)
    return found


def links(path: Path) -> list[str]:
    return [target for line in prose_lines(path.read_text(encoding="utf-8")) for target in LINK.findall(line)]


def test_documents_exist():
    names = {p.relative_to(REPO).as_posix() for p in DOCUMENTS}
    assert {"README.md", "CHANGELOG.md", "docs/performance.md", "docs/patchcore.md", "docs/retrieval.md"} <= names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(document):
    broken = []
    found = links(document)
    for target in found:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = (document.parent / file_part).resolve() if file_part else document
        if not destination.exists() or REPO not in (destination, *destination.parents):
            broken.append(f"{target}: no such file in the repository")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: {destination.name} has no heading with the anchor #{anchor}")
    assert found or document.name == "CHANGELOG.md", f"{document.name} has no links at all: the link parser broke"
    assert not broken, f"{document.relative_to(REPO)} has broken links:\n" + "\n".join(broken)


def test_readme_is_short_with_a_two_command_setup_block():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    n_lines = len(text.splitlines())
    assert n_lines <= README_MAX_LINES, f"README.md has {n_lines} lines, at most {README_MAX_LINES} allowed"
    setup = [block for block in fenced_blocks(text) if block[0].lower().startswith("set up")]
    assert setup, "README.md has no fenced block under a '## Set up' heading"
    _, info, lines = setup[0]
    commands = [line for line in lines if line.strip()]
    assert info in ("bash", "sh", "shell", "console"), f"the set-up block is fenced as {info!r}, not as shell"
    assert len(commands) == 2, f"the set-up block has {len(commands)} command lines, expected 2: {commands}"
    assert commands[0].startswith("pip install .") and commands[1].startswith('pip install ".[test]"'), commands


def test_readme_quick_start_prints_what_the_readme_shows(tmp_path, monkeypatch, capsys):
    blocks = [b for b in fenced_blocks((REPO / "README.md").read_text(encoding="utf-8"))
              if b[0].lower() == "quick start"]
    code = next(lines for _, info, lines in blocks if info == "python")
    shown = next(lines for _, info, lines in blocks if info == "text")
    monkeypatch.chdir(tmp_path)  # the example saves index.pqkit in the working directory
    exec(compile("\n".join(code), "README.md (Quick start)", "exec"), {"__name__": "readme_quick_start"})
    printed = capsys.readouterr().out.splitlines()
    assert printed == [line for line in shown if line.strip()]
