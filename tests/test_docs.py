"""The README is a front door that stays one: small, with the two commands, every link into docs/ resolving, and
its loading snippets running as printed (with the user's own readers) on a mini-run's output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").rglob("*.md"))

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """Markdown without code blocks and inline code, where a link or heading is not one."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        if re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip().lower().replace("`", "")
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path.read_text(encoding="utf-8")))
            if not re.match(r"[a-z]+:", t)]


def test_readme_is_under_12_kb_and_keeps_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(README.read_bytes()) < 12 * 1024
    assert "make demo" in text and "make test" in text


def test_every_relative_link_in_readme_and_docs_resolves_to_a_file_and_heading():
    assert len(DOCS) >= 15, "docs/ is missing"
    broken = []
    for page in [README, *DOCS]:
        for target in links(page):
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert broken == []


def test_every_docs_page_cited_in_the_code_exists():
    cited = set()
    for folder in ("pipeline", "stages", "schemas", "tests", "benchmarks"):
        for source in (REPO / folder).rglob("*.py"):
            if source == Path(__file__).resolve():
                continue
            cited |= set(re.findall(r"\bdocs/[\w./-]+?\.md\b", source.read_text(encoding="utf-8")))
    assert {"docs/design.md", "docs/references.md"} <= cited
    assert sorted(c for c in cited if not (REPO / c).exists()) == []


def snippet(needle: str) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    found = [b for b in blocks if needle in b]
    assert len(found) == 1, f"README should hold one python snippet with {needle!r}"
    return found[0]


def run_snippet(code: str, output: Path, cwd: Path) -> list[str]:
    """The snippet as printed, in a fresh interpreter whose out/mini is the mini-run's output."""
    (cwd / "out").mkdir()
    (cwd / "out" / "mini").symlink_to(output)
    env = {**os.environ, "HF_DATASETS_CACHE": str(cwd / "hf-cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def accepted(output: Path) -> list[dict]:
    return [r for r in pq.read_table(output / "manifest").to_pylist() if r["status"] == "accepted"]


def test_readme_hugging_face_snippet_counts_every_member_and_the_female_ones(mini_output, tmp_path):
    rows = accepted(mini_output)
    female = [r for r in rows if json.loads(r["attributes"]).get("gender") == "female"]
    assert rows and female
    lines = run_snippet(snippet("import datasets"), mini_output, tmp_path)
    assert lines[-1] == f"{len(rows)} members, {len(female)} female"


def test_readme_webdataset_snippet_yields_every_member_with_its_concept(mini_output, tmp_path):
    expected = {r["sample_key"]: r["concept"] for r in accepted(mini_output)}
    lines = run_snippet(snippet("import webdataset"), mini_output, tmp_path)
    assert dict(line.split(" ", 2)[:2] for line in lines) == expected
    assert len(lines) == len(expected)


def test_the_operations_page_lists_every_exit_code_the_cli_returns():
    from pipeline.commands import exit_codes

    codes = {v for k, v in vars(exit_codes).items() if k.isupper() and isinstance(v, int)}
    table = re.findall(r"^\| (\d+) \|", (REPO / "docs" / "operations.md").read_text(encoding="utf-8"), re.M)
    assert len(codes) >= 9
    assert {int(c) for c in table} == codes | {130}  # 130: Ctrl-C, returned by cli.main itself


def test_the_cli_reference_has_every_command():
    import argparse

    from pipeline.commands.cli import parser

    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    headings = anchors(REPO / "docs" / "reference" / "cli.md")
    assert len(commands) >= 10
    assert sorted(name for name in commands if name not in headings) == []
