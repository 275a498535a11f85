"""The README and the docs: every block marked runnable runs as written, without a warning, and the README stays
short and free of commit hashes and issue numbers."""

from __future__ import annotations

import re

import pytest

from helpers import DOCS, ROOT, run_block, runnable_blocks

BLOCKS = runnable_blocks()


def test_there_are_runnable_blocks_and_the_own_app_is_one_of_them():
    assert any("my_app.py" in files for _, files, _ in BLOCKS)


@pytest.mark.parametrize("page, files, commands", BLOCKS, ids=[f"{p}:{c.strip()[:40]}" for p, _, c in BLOCKS])
def test_a_runnable_block_runs_as_written_and_quietly(tmp_path, page, files, commands):
    result = run_block(files, commands, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    noise = [line for line in (result.stdout + result.stderr).splitlines() if re.search(r"warning", line, re.I)]
    assert not noise, noise


def test_the_readme_is_short_and_the_docs_name_no_commit_or_issue():
    assert len((ROOT / "README.md").read_text().splitlines()) < 300
    for page in DOCS:
        text = page.read_text()
        assert not re.search(r"\bcommit [0-9a-f]{7}\b", text), page.name
        assert not re.search(r"\bissue #?\d+|\(#\d+\)", text, re.I), page.name


def bench_pages():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pages", ROOT / "bench" / "pages.py")
    pages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pages)
    return pages


def test_benchmark_tables_are_written_from_their_saved_results():
    """No figure moved by hand: each results block is what bench/pages.py writes from docs/results/*.json (the
    README's comparison from the races and curves it cites)."""
    pages = bench_pages()
    blocks = 0
    for page in DOCS:
        text = page.read_text()
        blocks += len(pages.BLOCK.findall(text))
        assert pages.render(text) == text, f"{page.name} differs from its saved results: run python bench/pages.py"
    assert blocks >= 1


def test_the_readme_comparison_counts_the_rows_where_the_goal_holds():
    def row(best, to_upstream, to_ray):  # final best, then the two "time to" cells
        return [f"{best} (0.1..0.9)", to_upstream, to_ray]

    at = {"to": {"upstream": 1, "Ray": 2}, "best": 0}
    won = {"default": row(0.6, "40", "0.2"), "upstream": row(0.5, "80", "-"), "ray": row(0.55, "-", "0.4")}
    lost = {"default": row(0.5, "never", "0.3"), "upstream": row(0.6, "80", "-"), "ray": row(0.55, "-", "0.4")}
    said = bench_pages().verdict([won | at, lost | at])
    assert "as it comes ended above both peers in 1 of its 2 rows" in said
    assert "own time in 1 and Ray Tune's in 1" in said
    assert "with asha ended above both peers in 0 of its 0 rows" in said
