"""The worst faults, end to end: each case is a real sweep, command or evaluation hit by the fault, run by its test,
optionally beside CPU-bound processes (the load under which some of these faults first showed).

    python bench/faults.py [--load 2]

Hostile input, round three:
  a stale submitit result pickle in a reused sweep folder; a journal torn by a crash mid-write; a sweep killed
  between creating a trial and its first heartbeat; a sweep killed while its local Ray starts or runs trials; a
  trial that forks; SQLite writers racing on a new study
Issue #18 (hostile input, round two):
  1 a shared sweep folder whose study.json names a host and an ${oc.env:...} secret
  2 passwords in storage URLs: literal, behind a default, in the query, in an override that does not parse
  3 two studies in one sweep folder, one after the other and started together
  4 a new SQLite study opened by several workers at once
Issue #10 (the first round):
  5 a checkpoint that names hostile pickles      6 kill -9 on a pool worker
  7 kill -9 / SIGTERM on the sweep itself         8 the SQLite file deleted mid-sweep
  9 a damaged data cache
Prints one row per case: PASS or FAIL, the tests it ran and the seconds it took; saves the table for the docs
(docs/results/faults.json, written into docs/benchmarks.md by bench/pages.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pages
from common import header

ROOT = Path(__file__).resolve().parents[1]
P, H = "tests/plugin", "tests/harness"
X = "tests/extras"
CASES = [
    ("#26.1", "a planted submitit result pickle in a reused sweep folder: never read, no code runs",
     [f"{X}/test_slurm_pool.py::test_a_result_file_left_in_a_reused_sweep_folder_is_never_read"]),
    ("#26.4", "a journal torn mid-write: torn record moved aside, every complete one kept, the rerun goes on",
     [f"{P}/test_study.py::test_a_journal_whose_last_record_was_torn_loses_nothing_and_the_rerun_goes_on"]),
    ("#26.7", "killed between a trial's creation and its first heartbeat: failed and retried, nothing RUNNING",
     [f"{P}/test_study.py::test_a_trial_whose_sweep_died_before_its_first_heartbeat_is_failed_and_retried_by_the_next"]),
    ("#26.9", "kill -9 on a sweep while its local Ray starts, or while trials run: no Ray process left",
     [f"{X}/test_ray_pool.py::test_the_ray_a_killed_sweep_started_ends_with_it"]),
    ("#26.10", "a trial that forks, then Ctrl-C: the sweep stops, nothing left running",
     [f"{P}/test_pool.py::test_a_trial_that_forks_children_does_not_keep_the_stopped_sweep_alive"]),
    ("#26.15", "8 processes creating and writing one new SQLite study at once: no 'database is locked'",
     [f"{P}/test_storage.py::test_eight_processes_create_and_write_one_new_sqlite_study_at_once"]),
    ("#18.1", "a hostile study.json: no secret resolved, nothing sent to its host",
     [f"{P}/test_storage.py::test_a_hostile_sweep_folder_sends_no_secret_anywhere",
      f"{P}/test_storage.py::test_the_saved_study_record_is_data_not_a_url_to_trust"]),
    ("#18.2", "passwords: refused, never printed or saved, redacted by the parsed URL",
     [f"{P}/test_storage.py::test_a_literal_password_is_refused_and_never_printed",
      f"{P}/test_storage.py::test_a_password_from_the_environment_may_hold_any_character",
      f"{P}/test_storage.py::test_a_literal_password_on_the_command_line_is_refused_and_never_saved",
      f"{H}/test_mlp_faults.py::test_what_hydra_refuses_is_one_line"]),
    ("#18.3", "two studies, one sweep folder: the second is refused with one line",
     [f"{P}/test_study.py::test_two_studies_never_share_a_sweep_folder",
      f"{P}/test_study.py::test_two_studies_started_together_into_one_folder_one_is_refused"]),
    ("#18.4", "a new SQLite study: the schema is made once, by the sweep; every trial lands",
     [f"{P}/test_storage.py::test_a_new_sqlite_study_gets_its_schema_once_from_the_sweep_never_from_its_workers",
      f"{P}/test_pool.py::test_the_next_trial_starts_while_a_long_one_runs_and_each_records_where_it_ran"]),
    ("#10", "a checkpoint naming hostile pickles: no code runs",
     [f"{H}/test_evaluate.py::test_a_checkpoint_is_data_nothing_it_names_is_unpickled"]),
    ("#10", "kill -9 on a pool worker: one trial fails, a new worker takes its GPU slot",
     [f"{P}/test_pool.py::test_a_killed_worker_costs_one_trial_and_its_replacement_takes_the_same_gpu"]),
    ("#10", "kill -9 on the sweep: workers exit; the next sweep fails the silent trial and resumes it",
     [f"{H}/test_mlp_faults.py::test_workers_die_with_a_killed_sweep_and_the_next_sweep_resumes_the_trial"]),
    ("#10", "Ctrl-C / SIGTERM on the sweep: one line, trials FAIL, the rerun resumes",
     [f"{P}/test_pool.py::test_an_interrupted_sweep_fails_its_trials_says_so_in_one_line_and_can_resume"]),
    ("#10", "the SQLite file deleted mid-sweep: one error line, no fresh empty study",
     [f"{P}/test_study.py::test_a_deleted_sqlite_file_stops_the_sweep_with_one_line"]),
    ("#10", "a damaged data cache: rebuilt with a warning naming it",
     [f"{H}/test_data.py::test_a_damaged_cache_is_rebuilt_with_a_warning_naming_it"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", type=int, default=0, help="CPU-bound processes to run beside the cases")
    args = parser.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        header(f"Faults, end to end, beside {args.load} CPU-bound process(es)")
        print("| issue | fault | result | tests | seconds |")
        print("|---|---|---|---|---|")
        failed, rows = 0, []
        for number, what, nodes in CASES:
            start = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n0", "-p", "no:cacheprovider", "-m", "",
                                  *nodes], cwd=ROOT, capture_output=True, text=True)
            ok = run.returncode == 0
            failed += not ok
            summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else "no output"
            row = [what, "PASS" if ok else "FAIL", summary.strip("= ").split(" in ")[0],
                   f"{time.perf_counter() - start:.0f}"]
            rows.append(row)
            print(f"| {number} | {' | '.join(row)} |", flush=True)
            if not ok:
                print(run.stdout[-3000:], file=sys.stderr)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    if len(rows) == len(CASES):
        saved = pages.save("faults", ["fault", "result", "tests", "seconds"], rows,
                           f"one run of each case's tests beside {args.load} CPU-bound process(es); the seconds "
                           "include each run's start-up")
        print(f"saved {saved}; python bench/pages.py writes it into the docs")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
