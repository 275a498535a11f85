"""The sweep report, on one small real sweep of the test app shared by the tests in this file, and on studies
built here."""

import shutil
import subprocess
from pathlib import Path

import optuna
import pandas as pd
import pytest
from PIL import Image

from helpers import report_page, run_app, run_cli
from sweep.sweeper import report

METRIC = "score"  # the test app's metric_names

pytestmark = pytest.mark.xdist_group("report")  # the module's one sweep serves every test: keep them together

PLOTS = ["best_so_far.png", "learning_curves.png", "params.png", "importance.png", "cost.png"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A 6-trial sweep with an aggressive pruner and one injected failure."""
    cwd = tmp_path_factory.mktemp("sweep")
    result = run_app("--multirun", "hydra.sweeper.n_trials=6", "hydra/sweeper/sampler=random", "hydra.sweeper.report=true",
                     "hydra.sweeper.sampler.seed=1", "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1",
                     "fail_trial=1", "hydra.sweeper.max_failure_rate=0.5", "hydra.sweeper.n_jobs=1", cwd=cwd)
    assert result.returncode == 0, result.stderr
    (sweep_dir,) = [p.parent for p in cwd.glob("multirun/*/*/study.json")]
    report_page(sweep_dir)  # the command ends first; its plots come from a process of their own
    return sweep_dir


def _study(sweep_dir: Path) -> optuna.Study:
    return report.study_of_sweep_dir(sweep_dir)


def test_the_study_names_its_metric_as_the_trainer_does(swept):
    study = _study(swept)
    assert study.metric_names == [METRIC] and report.objectives(study) == [(METRIC, True)]


def test_table_has_a_row_per_trial_best_first(swept):
    table = pd.read_csv(swept / "report.csv")
    trials = _study(swept).trials
    assert sorted(table["trial"]) == [t.number for t in trials]
    for col in ["trial", "state", "reason", "lr", "width", METRIC, "steps", "seconds", "startup_seconds", "node",
                "gpus", "note", "run_dir"]:
        assert col in table.columns
    values = table[METRIC].dropna().tolist()
    assert values == sorted(values, reverse=True)
    assert set(table["state"]) <= {"COMPLETE", "PRUNED", "FAIL"}
    failed = table[table["state"] == "FAIL"]
    assert failed["reason"].tolist() == ["RuntimeError: cfg.fail is true"]
    pruned = table[table["state"] == "PRUNED"]
    assert len(pruned) and (pruned["reason"].str.match(r"pruned at step \d+ by median")).all()
    assert table.loc[table["state"] == "COMPLETE", "note"].str.startswith("pid ").all()  # the task's own attribute
    md = (swept / "report.md").read_text().splitlines()
    assert md[3].startswith("| trial | state |") and len(md) == 3 + len(trials) + 2


def test_plots_are_real_images(swept):
    for name in PLOTS:
        image = Image.open(swept / name)
        assert image.size[0] > 300 and image.size[1] > 200
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # more than a blank canvas with a frame


def test_html_embeds_every_plot_and_the_table(swept):
    page = (swept / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(PLOTS)
    for name in PLOTS:
        assert name in page
    assert '<table' in page and 'id="runs"' in page


def test_report_command_prints_the_top_runs_and_never_touches_the_study(swept, tmp_path):
    db = next(swept.parents[1].glob("studies/*.db"))
    before = db.read_bytes()
    out = tmp_path / "again"
    result = run_cli("sweep.report", str(swept), "--out", str(out), cwd=swept.parents[2])
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header[:2] == ["trial", "state"] and METRIC in header and "node" not in header
    assert len(result.stdout.strip().splitlines()) == 1 + len(_study(swept).trials)
    assert (out / "report.html").exists() and db.read_bytes() == before


def test_report_from_storage_url(swept, tmp_path):
    db = next(swept.parents[1].glob("studies/*.db"))
    result = run_cli("sweep.report", "--storage", f"sqlite:///{db}", "--study", "curve", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(tmp_path / "report-curve" / "report.csv")) == len(_study(swept).trials)


def test_comparing_two_sweeps(swept, tmp_path):
    result = run_cli("sweep.report", str(swept), str(swept), "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert len(table) == 2 and set(table.columns) >= {"sweep", f"best {METRIC}", "trials", "total_steps", "wall_minutes"}
    assert (tmp_path / "cmp" / "best_so_far.png").exists()


def test_a_running_trial_shows_its_best_report_so_far(swept, tmp_path):
    db = next(swept.parents[1].glob("studies/*.db"))
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    study = optuna.load_study(study_name="curve", storage=f"sqlite:///{copy}")
    running = study.ask()
    running.report(0.5, 1)
    running.report(0.25, 2)
    table = report.write_report(report.open_study(f"sqlite:///{copy}", "curve"), tmp_path / "out")
    row = table[table["trial"] == running.number].iloc[0]
    assert row["state"] == "RUNNING" and row[METRIC] == 0.5 and row["steps"] == 2


def test_a_sweep_with_no_completed_trial_still_gets_its_report(tmp_path):
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    failed = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    failed.set_user_attr("fail_reason", "Diverged: training diverged")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    study.ask().report(0.3, 1)  # still running
    table = report.write_report(study, tmp_path / "out")
    assert table["state"].tolist() == ["RUNNING", "FAIL"] and table["reason"].tolist()[1].startswith("Diverged")
    written = {p.name for p in (tmp_path / "out").glob("*.png")}
    assert written == {"best_so_far.png", "params.png", "importance.png", "cost.png"}  # no finished curves to draw


@pytest.mark.parametrize("when", ["true", "wait"])
def test_the_plots_are_drawn_after_the_command_ends_unless_asked_to_wait(tmp_path, when):
    result = run_app("--multirun", "hydra.sweeper.n_trials=3", f"hydra.sweeper.report={when}", "hydra.sweeper.n_jobs=1",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "sweep"
    assert len(pd.read_csv(out / "report.csv")) == 3  # the table is there when the command ends
    if when == "wait":
        page = (out / "report.html").read_text()
        assert not (out / "report.log").exists()
    else:  # a process of its own draws them, and says so in report.log
        assert "its plots follow" in result.stdout + result.stderr and (out / "report.log").exists()
        page = report_page(out)
        assert "report written to" in (out / "report.log").read_text()
    assert page.count("data:image/png;base64,") == len(PLOTS) and report.REFRESH not in page


def test_a_drawer_that_cannot_draw_says_so_and_the_page_stops_waiting(tmp_path):
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    report.write_report(study, tmp_path / "out", plots=False)
    assert report.REFRESH in (tmp_path / "out" / "report.html").read_text()
    (tmp_path / "s.db").unlink()  # the study is gone before its plots could be drawn
    with pytest.raises(SystemExit):
        report.drawer(f"sqlite:///{tmp_path / 's.db'}", "s", str(tmp_path / "out"))
    page = (tmp_path / "out" / "report.html").read_text()
    assert report.REFRESH not in page and "The plots could not be drawn" in page and 'id="runs"' in page


@pytest.mark.parametrize("args, fragment", [
    (["/no/such/sweep"], "not a directory"),
    (["--storage", "sqlite:////no/such.db", "--study", "x"], "--storage=sqlite:////no/such.db: no such file"),
    ([], "give a sweep directory"),
])
def test_bad_report_input(tmp_path, args, fragment):
    result = run_cli("sweep.report", *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert fragment in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("case, fragment", [
    ("study.json garbage", "study.json is damaged"),
    ("study.json incomplete", "study.json is damaged"),
    ("study.json in memory", "kept in memory"),
    ("out is a file", "--out"),
    ("missing journal", "--storage=journal:"),
    ("empty database", "is not an Optuna study storage"),
    ("text file as database", "is not an Optuna study storage"),
])
def test_damaged_or_wrong_inputs_are_one_line_with_exit_code_2(tmp_path, capsys, case, fragment):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    args = [str(sweep_dir)]
    if case == "study.json garbage":
        (sweep_dir / "study.json").write_text("{not json")
    elif case == "study.json incomplete":
        (sweep_dir / "study.json").write_text('{"storage": "sqlite:///x.db"}')
    elif case == "study.json in memory":
        (sweep_dir / "study.json").write_text('{"storage": null, "study_name": "s"}')
    elif case == "out is a file":
        optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}").optimize(lambda t: 1.0, n_trials=1)
        (tmp_path / "afile").write_text("x")
        args = ["--storage", f"sqlite:///{tmp_path / 's.db'}", "--study", "s", "--out", str(tmp_path / "afile")]
    elif case == "missing journal":
        args = ["--storage", f"journal:///{tmp_path / 'none.log'}", "--study", "s"]
    elif case == "empty database":
        (tmp_path / "empty.db").write_bytes(b"")
        args = ["--storage", f"sqlite:///{tmp_path / 'empty.db'}", "--study", "s"]
    else:
        (tmp_path / "notes.db").write_text("just some notes\n" * 100)
        args = ["--storage", f"sqlite:///{tmp_path / 'notes.db'}", "--study", "s"]
    assert report.cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


def test_empty_study_is_a_clear_error(tmp_path):
    optuna.create_study(study_name="empty", storage=f"sqlite:///{tmp_path / 'e.db'}")
    result = run_cli("sweep.report", "--storage", f"sqlite:///{tmp_path / 'e.db'}", "--study", "empty", cwd=tmp_path)
    assert result.returncode != 0 and "no trials" in result.stderr


def test_report_renders_in_a_browser(swept, tmp_path):
    """Every image decodes (natural width > 0) and the table is visible, in headless Chromium."""
    import os

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        assert not os.environ.get("CI"), "CI must have Chromium: .ci/run installs Debian's chromium package"
        pytest.skip("Chromium is not installed: `bash .ci/run` installs it (Debian), or apt-get install chromium")
    probe = tmp_path / "probe.html"
    page = (swept / "report.html").read_text()
    script = """<script>window.addEventListener('load', () => {
      const imgs = [...document.images];
      const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
      const t = document.getElementById('runs');
      const visible = t && t.getBoundingClientRect().height > 0 && getComputedStyle(t).display !== 'none';
      document.title = `images ${ok}/${imgs.length} table ${visible ? 'visible' : 'hidden'} rows ${t ? t.rows.length - 1 : 0}`;
    });</script></head>"""
    probe.write_text(page.replace("</head>", script, 1))
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    n = len(PLOTS)
    rows = len(_study(swept).trials)
    assert f"<title>images {n}/{n} table visible rows {rows}</title>" in result.stdout, result.stdout[-500:] + result.stderr[-1500:]


def _study_with(tmp_path, specs) -> optuna.Study:
    """A maximize study from (state, reports, result, user attrs) tuples."""
    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 'made.db'}", study_name="made")
    for state, reports, result, attrs in specs:
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        for step, value in enumerate(reports, 1):
            trial.report(value, step)
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        study.tell(trial, result if state == "COMPLETE" else None, state=getattr(optuna.trial.TrialState, state))
    return study


def test_the_headline_names_the_best_trial_its_value_wall_time_and_states(tmp_path):
    study = _study_with(tmp_path, [("COMPLETE", [0.2, 0.4], 0.4, {}), ("COMPLETE", [0.5, 0.9], 0.6, {}),
                                   ("PRUNED", [0.1], None, {}), ("FAIL", [], None, {})])
    table = report.write_report(study, tmp_path / "out")
    best = study.best_trial
    lines = (tmp_path / "out" / "report.md").read_text().splitlines()
    assert lines[0].startswith("4 trials (2 complete, 1 pruned, 1 fail) in ") and "of wall time; maximize value" in lines[0]
    assert lines[1] == f"Best: trial {best.number}, value = 0.6, with x={best.params['x']:.4g}."
    page = (tmp_path / "out" / "report.html").read_text()
    assert lines[0] in page and lines[1] in page and table["value"].iloc[0] == 0.6


def test_every_user_attribute_is_a_column_and_start_up_is_kept_out_of_seconds(tmp_path):
    study = _study_with(tmp_path, [
        ("COMPLETE", [0.3], 0.3, {"note": "first", "shape": {"layers": [1, 2]}, "startup_seconds": 20.0,
                                  "run_seconds": 2.0}),
        ("COMPLETE", [0.5], 0.5, {"note": "second", "run_seconds": 3.5})])
    table = report.trials_table(study).set_index("trial")
    assert table.loc[0, "note"] == "first" and table.loc[0, "shape"] == '{"layers": [1, 2]}'
    assert table.loc[0, "seconds"] == 2.0 and table.loc[0, "startup_seconds"] == 20.0
    assert table.loc[1, "seconds"] == 3.5 and pd.isna(table.loc[1, "startup_seconds"])
    assert "run_seconds" not in table.columns


def test_curves_are_labelled_with_results_and_clipped_to_the_bulk_of_the_values(tmp_path):
    import matplotlib.pyplot as plt

    specs = [("COMPLETE", [0.5 + i / 100, 0.9, 0.6], 0.6 + i / 100, {}) for i in range(5)]
    specs.append(("PRUNED", [1e9], None, {}))  # a wild value that would squash the plot
    study = _study_with(tmp_path, specs)
    captured = {}
    real = report._save
    report._save = lambda fig, path: captured.update(fig=fig)  # look at the figure instead of the file
    try:
        report.plot_learning_curves(study.trials, "value", True, tmp_path / "curves.png")
    finally:
        report._save = real
    ax = captured["fig"].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:5] == [f"trial {n}: {0.6 + n / 100:.4g}" for n in (4, 3, 2, 1, 0)]  # results, not best reports
    assert ax.get_ylim()[1] < 2 and "1 of 16 points outside" in ax.get_title()
    plt.close(captured["fig"])


def test_hostile_labels_huge_values_and_huge_attributes_are_drawn_or_skipped_never_a_traceback(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    study = optuna.create_study(study_name="a $b^$ study", storage=url, direction="maximize")
    study.set_metric_names(["$x^$"])
    space = {"c": optuna.distributions.CategoricalDistribution(["$a^$", "plain"]),
             "lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)}
    for i, value in enumerate([1e308, -1e308, 0.5, 0.25]):
        study.add_trial(optuna.trial.create_trial(
            params={"c": "$a^$" if i % 2 else "plain", "lr": 10 ** -(i % 3)}, distributions=space, value=value,
            intermediate_values={1: value, 2: value}, user_attrs={"blob": "x" * 3_000_000} if i == 0 else {}))
    result = run_cli("sweep.report", "--storage", url, "--study", "a $b^$ study", "--out", str(tmp_path / "out"),
                     cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(result.stdout) < 20_000  # the 3 MB attribute is cut on the terminal
    assert (tmp_path / "out" / "report.html").stat().st_size < 1_000_000
    assert len((tmp_path / "out" / "report.csv").read_text()) > 3_000_000  # the table file keeps everything
