"""Benchmark tables in the docs come from saved results, never from figures moved by hand.

A bench script calls `save(name, ...)` once it has measured: docs/results/NAME.json keeps its rows with the
machine, the date, the command and how the spread is given. `python bench/pages.py` writes each table into the
page that shows it, between `<!-- results: NAME -->` and `<!-- /results -->`. tests/plugin/test_docs.py fails when
a page and its saved results disagree.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
BLOCK = re.compile(r"<!-- results: (?P<name>[\w-]+) -->\n.*?<!-- /results -->", re.S)


def save(name: str, columns: list[str], rows: list[list[str]], spread: str) -> Path:
    """Keep one bench's table with where and how it was measured (its machine as bench/common.py describes it)."""
    from sweep.mlp.device import describe

    result = {"name": name, "command": "python " + " ".join(sys.argv), "machine": describe(),
              "date": datetime.date.today().isoformat(), "spread": spread, "columns": columns, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def table(result: dict) -> str:
    lines = [f"Measured on {result['date']} with `{result['command']}`, on {result['machine']}; {result['spread']}.",
             "", "| " + " | ".join(result["columns"]) + " |", "|" + "---|" * len(result["columns"])]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in result["rows"]]
    return "\n".join(lines)


def render(text: str) -> str:
    """The page with each results block written from its saved JSON."""
    def block(match: re.Match) -> str:
        result = json.loads((RESULTS / f"{match['name']}.json").read_text())
        return f"<!-- results: {match['name']} -->\n{table(result)}\n<!-- /results -->"

    return BLOCK.sub(block, text)


def main() -> None:
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text()
        new = render(text)
        if new != text:
            page.write_text(new)
            print(f"wrote {page.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
