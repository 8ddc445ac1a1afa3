"""The documentation holds together: the README stays short, and every relative link of the
README, docs/, bench/README.md and slurm/README.md reaches a file of the repository and, with
an #anchor into a Markdown file, one of its headings (GitHub's anchors)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md",
         ROOT / "slurm" / "README.md"]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+).+?\1", re.S)
LINK = re.compile(r"!?\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.M)
EXTERNAL = re.compile(r"^(?:https?://|mailto:)", re.I)


def prose(text):
    """The text without fenced code blocks and inline code, where nothing is a link or a
    heading (`# mymodels.py` in a python block is a comment)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading):
    """GitHub's anchor of a heading: its text (links reduced to their text, code marks
    dropped), lower case, only letters, digits, spaces, hyphens and underscores kept, spaces
    turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    """Every heading anchor of a Markdown file; a repeated slug gets -1, -2, ... as on GitHub."""
    seen, found = {}, set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path):
    """(text, target) of every Markdown link and image in a file's prose."""
    return LINK.findall(prose(path.read_text(encoding="utf-8")))


def name(path, root=ROOT):
    return path.relative_to(root).as_posix()


def broken_links(page, root=ROOT):
    """'FILE: [text](target): why' for every relative link of `page` that leads nowhere."""
    broken = []
    for text, target in links(page):
        if EXTERNAL.match(target):
            continue
        where = f"{name(page, root)}: [{text}]({target})"
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.is_relative_to(root):
            broken.append(f"{where}: points outside the repository ({linked})")
            continue
        if not linked.exists():
            broken.append(f"{where}: {name(linked, root)} does not exist")
            continue
        if anchor and linked.is_file() and linked.suffix.lower() == ".md" \
                and anchor not in anchors(linked):
            broken.append(f"{where}: {name(linked, root)} has no heading with the anchor "
                          f"#{anchor}")
    return broken


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, \
        f"README.md: {lines} lines, more than {README_MAX_LINES}: move detail into docs/"


def test_every_documentation_page_exists():
    missing = [name(page) for page in PAGES if not page.is_file()]
    assert not missing, f"missing documentation pages: {missing}"
    assert len(PAGES) > 4, "docs/ holds no Markdown pages"


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_relative_links_reach_a_file_and_a_heading(page):
    broken = broken_links(page)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_slugs_follow_github():
    assert slug("Guards and `--debug`") == "guards-and---debug"
    assert slug("A scaling model to 1,024 GPUs") == "a-scaling-model-to-1024-gpus"
    assert slug("Bad input: what it says, and where that is tested") == \
        "bad-input-what-it-says-and-where-that-is-tested"
    assert slug("dist_nn — design") == "dist_nn--design"


def test_repeated_headings_get_numbered_anchors(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Notes\n\n## Notes\n\n```python\n# Notes\n```\n\n## Notes\n")
    assert anchors(page) == {"notes", "notes-1", "notes-2"}


def test_broken_links_are_named(tmp_path):
    root = tmp_path.resolve()
    (root / "a.md").write_text("# A\n\n## Here\n")
    page = root / "b.md"
    page.write_text("[ok](a.md#here) [anchor](a.md#there) [gone](c.md) [self](#b) [noself](#c) "
                    "[web](https://example.org/x) `[code](nowhere.md)` [up](../x.md)\n\n# B\n")
    assert broken_links(page, root) == [
        "b.md: [anchor](a.md#there): a.md has no heading with the anchor #there",
        "b.md: [gone](c.md): c.md does not exist",
        "b.md: [noself](#c): b.md has no heading with the anchor #c",
        f"b.md: [up](../x.md): points outside the repository ({root.parent / 'x.md'})"]


def test_code_cites_sections_of_the_design_that_exist():
    """Comments and docstrings cite the design as "docs/design.md §3.5": that section is a
    heading of docs/design.md."""
    sections = {match.group(1) for match in re.finditer(
        r"^#{2,3} (\d+(?:\.\d+)?)\.? ", (ROOT / "docs" / "design.md").read_text(), re.M)}
    cited = {}
    for folder in ("dist_nn", "datasets", "launch", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for number in re.findall(r"docs/design\.md §(\d+(?:\.\d+)?)", path.read_text()):
                cited.setdefault(number, []).append(str(path.relative_to(ROOT)))
    assert cited, "no code cites docs/design.md"
    missing = {number: paths for number, paths in cited.items() if number not in sections}
    assert not missing, f"cited sections that docs/design.md lacks: {missing}"
