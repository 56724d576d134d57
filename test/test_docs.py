"""The documentation stays true to the code: the parameter table of docs/node.md against the node's
own list, every relative link of the Markdown pages, and the size of the front page (README.md)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from acr_ros.hands_node import PARAMS

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
README_LIMIT = 12 * 1024

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def shown(default) -> str:
    """A default as docs/node.md writes it (inside backticks): YAML-like scalars, Python-like lists."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, str):
        return default if default else "''"
    if isinstance(default, (list, tuple)):
        return "[" + ", ".join(repr(item) for item in default) + "]"
    return str(default)


def documented_parameters() -> dict[str, str]:
    """name -> default cell (without its backticks) of the table under '## Parameters'."""
    text = (ROOT / "docs" / "node.md").read_text()
    match = re.search(r"^## Parameters\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, "docs/node.md has no '## Parameters' section"
    rows = {}
    for line in match.group(1).splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue  # not a row, the header, or the separator
        name = cells[0].strip("`")
        assert name not in rows, f"docs/node.md documents {name} twice"
        assert cells[2].startswith("`") and cells[2].endswith("`"), f"{name}: default not in backticks"
        rows[name] = cells[2][1:-1]
    return rows


def prose(text: str) -> str:
    """The text outside code blocks and inline code, where links are links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    found = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def relative_links(page: Path):
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # https:, mailto:
        yield target


def test_every_node_parameter_is_documented_with_its_default():
    documented = documented_parameters()
    missing = [p.name for p in PARAMS if p.name not in documented]
    assert not missing, f"docs/node.md does not document: {', '.join(missing)}"
    wrong = {p.name: (documented[p.name], shown(p.default)) for p in PARAMS
             if documented[p.name] != shown(p.default)}
    assert not wrong, "docs/node.md gives the wrong default (documented, actual): " + repr(wrong)


def test_no_documented_parameter_that_the_node_lacks():
    names = {p.name for p in PARAMS}
    extra = sorted(set(documented_parameters()) - names)
    assert not extra, f"docs/node.md documents parameters the node does not have: {', '.join(extra)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        file_part, _, fragment = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {', '.join(broken)}"


def test_links_are_found():
    """The link check sees links at all (a pattern that matched nothing would pass every page)."""
    assert "docs/node.md" in set(relative_links(ROOT / "README.md"))


def test_readme_is_a_front_page():
    size = len((ROOT / "README.md").read_bytes())
    assert size < README_LIMIT, f"README.md is {size} bytes: keep it under {README_LIMIT} (move detail to docs/)"


def test_readme_test_command_is_what_ci_runs():
    """The README's test command is the one .ci/run calls."""
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^scripts/test\.sh\b", (ROOT / "README.md").read_text(), re.MULTILINE)
