"""Benchmark tables in the docs come from saved results, never from figures moved by hand.

A bench script calls `save(name, ...)` once it has measured: docs/results/NAME.json keeps its rows with the
machine, the date, the command and how the spread is given. `python bench/pages.py` writes each table into the
page that shows it (the README or a page of docs/), between `<!-- results: NAME -->` and `<!-- /results -->`; the
README's `summary` block is built from several of them (summary()).
tests/plugin/test_docs.py fails when a page and its saved results disagree.
"""

from __future__ import annotations

import datetime
import json
import math
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


# The README's comparison: ours as it comes and with asha, beside the peers, from these saved races and curves.
CIFAR = "CIFAR-10, the whole MLP space"
SUMMARY = {"race-cifar10-default": CIFAR, "race-cifar10-default-epyc": CIFAR, "curves": "synthetic curves",
           "curves-mixed": "synthetic curves"}
CONTENDERS = {"default": ("sweep, budget + median (pool)", "ours: budget + median"),
              "asha": ("sweep, budget + asha (pool)", "ours: budget + asha (promotion)"),
              "upstream": ("hydra-optuna-sweeper (joblib)", "upstream (TPE, no pruning, batches)"),
              "ray": ("Ray Tune, ASHA, reuse_actors", "ray (ASHA + OptunaSearch)")}


def summary() -> str:
    """The README's table, built from saved results only: each setting's final best, median (range), for ours (as
    it comes, and with asha) and each peer, and when ours first matched each peer's final best beside when that
    peer itself got there."""
    lines = ["Built by `python bench/pages.py` from the saved tables in [docs/benchmarks.md](docs/benchmarks.md), "
             "each row on its own machine. Final best: median (range) over the rounds or seeds, ours as it comes "
             "(`budget` sampler, `median` pruner) and with `hydra/sweeper/pruner=asha` (- where not run). Time to a "
             "peer's best: ours as it comes / with asha / the peer itself, in seconds (races) or as a share of the "
             "budget (synthetic curves).", "",
             "| benchmark | machine | ours | ours, asha | hydra-optuna-sweeper | Ray Tune "
             "| time to upstream's best | time to Ray's best |", "|" + "---|" * 8]
    tally: list[dict] = []
    for name, what in SUMMARY.items():
        result = json.loads((RESULTS / f"{name}.json").read_text())
        col = {c: i for i, c in enumerate(result["columns"])}
        best, race = col["final best, median (range)"], "rounds" in col
        to = {peer: col[f"{'s' if race else 'time'} to {peer}'s final best"] for peer in ("upstream", "Ray")}
        keys = [i for c, i in col.items() if c in ("condition", "curves", "workers")]
        machine = result["machine"].split(", torch")[0].replace("(R)", "").replace(" Processor", "")
        if race:
            minutes = int(re.search(r"--budget (\d+)", result["command"])[1]) // 60
        else:
            seeds = re.search(r"over (\d+) seeds", result["spread"])[1]
        groups: dict[tuple, dict] = {}
        for row in result["rows"]:
            who = next((k for k, names in CONTENDERS.items() if row[col["contender"]] in names), None)
            if who:
                groups.setdefault(tuple(row[i] for i in keys), {})[who] = row
        for rows in groups.values():
            tally.append(rows | {"to": to, "best": best})
            mine = rows["default"]
            where = (f"{what}, {minutes} min a contender, {mine[col['rounds']]} rounds" if race else
                     f"{what} `{mine[col['curves']]}`, {mine[col['workers']]} workers, {seeds} seeds")
            cells = [rows[who][best] if who in rows else "-" for who in CONTENDERS]
            cells += [" / ".join(rows[who][to[peer]] if who in rows else "-"
                                 for who in ("default", "asha", peer.lower())) for peer in ("upstream", "Ray")]
            lines.append(f"| {where} | {machine} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", verdict(tally)])


def verdict(groups: list[dict]) -> str:
    """The goal, counted over the table's rows: a higher final best than both peers, and each peer's final best in
    at most half of that peer's own time."""
    def number(cell: str) -> float:
        return math.inf if cell == "never" else float(cell.split()[0])

    said = []
    for who, label in (("default", "as it comes"), ("asha", "with asha")):
        rows = [g for g in groups if who in g]
        above = sum(number(g[who][g["best"]]) > max(number(g[p][g["best"]]) for p in ("upstream", "ray")) for g in rows)
        half = {peer: sum(number(g[who][g["to"][peer]]) <= number(g[peer.lower()][g["to"][peer]]) / 2 for g in rows)
                for peer in ("upstream", "Ray")}
        said.append(f"{label} ended above both peers in {above} of its {len(rows)} rows, and reached "
                    f"hydra-optuna-sweeper's final best in at most half that sweeper's own time in {half['upstream']} "
                    f"and Ray Tune's in {half['Ray']}")
    return "Counted over the rows: ours " + "; ours ".join(said) + "."


def render(text: str, missing: list | None = None) -> str:
    """The page with each results block written from its saved JSON. A block without one raises, unless `missing`
    collects its name (the block is then left as it is)."""
    def block(match: re.Match) -> str:
        if match["name"] == "summary":
            return f"<!-- results: summary -->\n{summary()}\n<!-- /results -->"
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
