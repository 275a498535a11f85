"""Benchmark tables in the docs come from saved results, never from figures moved by hand.

A bench script calls `save(name, ...)` once it has measured: docs/results/NAME.json keeps its rows with the
machine, the date, the command and how the spread is given. `python bench/pages.py` writes each table into the
page that shows it (the README or a page of docs/), between `<!-- results: NAME -->` and `<!-- /results -->`.
tests/plugin/test_docs.py fails when a page and its saved results disagree.
"""

from __future__ import annotations

import datetime
import json
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
BLOCK = re.compile(r"<!-- results: (?P<name>[\w-]+) -->\n.*?<!-- /results -->", re.S)


def measured_here() -> dict:
    """Where and how a measurement is being made: the command, this machine, today."""
    from sweep.mlp.device import describe

    return {"command": "python " + shlex.join(sys.argv), "machine": describe(), "date": datetime.date.today().isoformat()}


def save(name: str, columns: list[str], rows: list[list[str]], spread: str, where: dict | None = None) -> Path:
    """Keep one bench's table with where and how it was measured: here and now, or `where` (measured_here() of the
    run whose saved traces the table was rebuilt from)."""
    result = {"name": name, **(where or measured_here()), "spread": spread, "columns": columns, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def parse(lines: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
    """A printed markdown table back into its columns and rows, and the lines around it (a verdict, a note)."""
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.lstrip().startswith("|")]
    rows = [r for r in cells[1:] if not all(set(c) <= set("-:") for c in r)]
    return cells[0] if cells else [], rows, [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("|")]


def show(columns: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Print a table as a bench measured it; returns it for save()."""
    print("\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                    + ["| " + " | ".join(map(str, row)) + " |" for row in rows]), flush=True)
    return columns, rows


def table(result: dict) -> str:
    lines = [f"Measured on {result['date']} with `{result['command']}`, on {result['machine']}; {result['spread']}.",
             "", "| " + " | ".join(result["columns"]) + " |", "|" + "---|" * len(result["columns"])]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in result["rows"]]
    return "\n".join(lines)


def render(text: str, missing: list | None = None) -> str:
    """The page with each results block written from its saved JSON. A block without one raises, unless `missing`
    collects its name (the block is then left as it is)."""
    def block(match: re.Match) -> str:
        path = RESULTS / f"{match['name']}.json"
        if missing is not None and not path.exists():
            missing.append(match["name"])
            return match[0]
        result = json.loads(path.read_text())
        return f"<!-- results: {match['name']} -->\n{table(result)}\n<!-- /results -->"

    return BLOCK.sub(block, text)


def main() -> None:
    missing: list[str] = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        new = render(text, missing)
        if new != text:
            page.write_text(new)
            print(f"wrote {page.relative_to(ROOT)}")
    for name in missing:
        print(f"no saved results yet: docs/results/{name}.json (its block is left as it is)")


if __name__ == "__main__":
    main()
