"""The worst faults, end to end: each case is a real sweep (or evaluation) hit by the fault, run by its test.

    python bench/faults.py

1 a password in the storage URL's query      2 a checkpoint that names a folder of hostile pickles
3 kill -9 on one of two pool workers          4 kill -9 / SIGTERM on the sweep itself
5 the SQLite file deleted mid-sweep           7 a truncated, garbage or foreign data cache
Prints one row per case: PASS or FAIL, and the seconds it took.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from common import header

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    ("1", "password in the URL's query: refused, never printed or saved",
     "tests/test_faults.py::test_a_password_in_the_query_is_refused_and_never_printed"),
    ("2", "checkpoint naming hostile pickles: no code runs",
     "tests/test_evaluate.py::test_a_checkpoint_is_data_nothing_it_names_is_unpickled"),
    ("3", "kill -9 on a pool worker: one trial fails, a new worker goes on",
     "tests/test_faults.py::test_a_killed_worker_costs_one_trial_and_is_replaced"),
    ("4", "kill -9 on the sweep: workers exit; the next sweep retries and resumes the trial",
     "tests/test_faults.py::test_workers_die_with_a_killed_sweep_and_the_next_sweep_resumes_the_trial"),
    ("4", "SIGTERM on the sweep: handled like Ctrl-C",
     "tests/test_sweep.py::test_an_interrupted_sweep_marks_its_trials_failed_and_keeps_the_study_readable[sigterm]"),
    ("5", "SQLite file deleted mid-sweep: one error line, no fresh empty study",
     "tests/test_faults.py::test_a_deleted_sqlite_file_stops_the_sweep_with_one_line"),
    ("7", "damaged data cache: rebuilt with a warning naming it",
     "tests/test_data.py::test_a_damaged_cache_is_rebuilt_with_a_warning_naming_it"),
]


def main() -> None:
    header("Faults, end to end")
    print("| case | fault | result | seconds |")
    print("|---|---|---|---|")
    failed = 0
    for number, what, node in CASES:
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n0", "-p", "no:cacheprovider", node], cwd=ROOT,
                             capture_output=True, text=True)
        ok = run.returncode == 0
        failed += not ok
        print(f"| {number} | {what} | {'PASS' if ok else 'FAIL'} | {time.perf_counter() - start:.0f} |", flush=True)
        if not ok:
            print(run.stdout[-3000:], file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
