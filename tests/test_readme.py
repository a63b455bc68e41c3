"""The README is the first hour: short, its commands the ones CI runs, every longer page one click away.

What moved out of the README (issue 19: it was 646 lines) lives in docs/; this test keeps that
promise: nothing lost (every section the README used to have is a heading of the README or of a page
it links), nothing dangling (every relative link resolves), nothing orphaned (every docs page is
linked from the README).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 250
# The README's sections before the split (commit 3d70844), each of which must still be one click away.
FORMER_SECTIONS = (
    "Set up and run", "Results of the default run", "What `dvc repro` runs", "Experiments",
    "Protocols: every number marked against the protocol it claims", "The ZegCLIP baseline, exactly as its public code",
    "Parameters and presets", "Benchmark settings and how to run each", "The real data path", "Paper scale on GPUs",
    "Training, resume", "Evaluation", "Segment your own images", "Browsing results in MLflow", "Tables and figures",
    "Benchmarks", "Reproducibility and environments", "Tuning the embedded default", "Layout",
)
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def _readme() -> str:
    return (REPO / "README.md").read_text()


def _headings(text: str) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#{1,4} (.+)$", text, re.M)}


def _relative_links(path: Path) -> list[Path]:
    out = []
    for target, _ in LINK.findall(path.read_text()):
        if not re.match(r"^[a-z]+://", target):
            out.append((path.parent / target).resolve())
    return out


def test_readme_is_short():
    assert len(_readme().splitlines()) <= MAX_LINES


def test_readme_commands_are_what_ci_runs():
    text = _readme()
    assert "pip install -e '.[dev]' && dvc repro" in text
    assert "python -m pytest -q" in text
    assert "python -m pytest -q" in (REPO / ".ci" / "run").read_text()


def test_every_link_resolves_and_every_docs_page_is_one_click_away():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for page in pages:
        for target in _relative_links(page):
            assert target.exists(), f"{page.relative_to(REPO)} links to {target}, which does not exist"
    linked = set(_relative_links(REPO / "README.md"))
    orphans = [p.name for p in (REPO / "docs").glob("*.md") if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"


def test_nothing_the_readme_held_was_lost():
    readme = REPO / "README.md"
    reachable = _headings(readme.read_text())
    for target in _relative_links(readme):
        if target.suffix == ".md" and target.is_file():
            reachable |= _headings(target.read_text())
    missing = [s for s in FORMER_SECTIONS if s not in reachable]
    assert not missing, f"sections no longer reachable from the README in one click: {missing}"
