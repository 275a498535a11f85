"""Trackers, with their real packages, read back through their own readers: a real MLflow tracking server (SQLite
backend, on a free port) through MLflow's client, TensorBoard's event reader, W&B's offline run files; and
hydra.sweeper.callbacks with optuna-integration's MLflowCallback, unchanged."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from helpers import EXAMPLES, MARK, assert_one_line_error, run_app, sweep_dirs
from mlp import train_cli

pytest.importorskip("optuna_integration")
mlflow = pytest.importorskip("mlflow")

# The tests on the tracking server share it, and one of them starts Ray: they stay with the other Ray tests.
on_the_server = pytest.mark.xdist_group("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` as users start it, in its own process group (it starts workers), ended with the group; it
    outlives single tests, so it does not carry their mark. Its background job runners (eight processes that poll)
    are off: the tests log runs, they start no server-side jobs."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=root, env={**{k: v for k, v in os.environ.items() if k != MARK}, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=open(root / "log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, (root / "log").read_text()[-3000:]
                time.sleep(0.2)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# A sweep whose outcome is known, whatever the sampler draws: the two enqueued trials at lr 0.03 learn well, and the
# third, at 3e-5, starts once one of them has completed, so the median pruner (one trial to compare with) stops it at
# its first epoch: pruned and completed trials both exist. The two good ones differ in width because the sweeper
# enqueues a configuration only once (a rerun must not add it again).
SWEEP = ["--multirun", "search=digits", "data=digits", "trainer.epochs=3", "model.depth=1", "model.width=choice(64,32)",
         "optimizer=adamw", "model.dropout=0", "optimizer.lr=choice(0.03,0.00003)", "hydra.sweeper.n_trials=8",
         "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1",
         "hydra.sweeper.pruner.n_warmup_steps=0", "trainer.save_checkpoint=true",
         "hydra.sweeper.report=false",  # the report is tested elsewhere
         "hydra.sweeper.enqueue=[{optimizer.lr:0.03,model.width:64},{optimizer.lr:0.03,model.width:32},"
         "{optimizer.lr:0.00003,model.width:64}]"]


def states(cwd: Path, study: str = "digits") -> dict[int, str]:
    trials = optuna.load_study(study_name=study, storage=f"sqlite:///{cwd / 'multirun/studies' / study}.db").trials
    return {t.number: t.state.name for t in trials}


def check_mlflow(uri: str, experiment_name: str, optuna_states: dict[int, str]) -> str:
    """One parent run; a child per trial with its parameters, per-epoch metrics, state and checkpoint. Returns the
    parent's id."""
    client = mlflow.tracking.MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED" and "best_value" in parent.data.metrics
    children = {int(r.data.tags["sweep.trial"]): r for r in runs if r is not parent}
    assert sorted(children) == sorted(optuna_states)
    assert "PRUNED" in optuna_states.values() and "COMPLETE" in optuna_states.values()
    for number, run in children.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.run_name == f"trial-{number}"
        assert run.data.params["optimizer.lr"] in ("0.03", "3e-05") and "model.width" in run.data.params
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        expected = {"COMPLETE": ("completed", "FINISHED"), "PRUNED": ("pruned", "KILLED")}[optuna_states[number]]
        assert (run.data.tags["sweep.state"], run.info.status) == expected, number
        assert epochs == list(range(1, len(epochs) + 1)) and (len(epochs) == 3) == (expected[0] == "completed")
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["best.pt"]
    return parent.info.run_id


@on_the_server
def test_mlflow_tensorboard_and_csv_on_the_pool_one_parent_per_study_also_after_resume(tmp_path, server):
    result = train_cli(*SWEEP, "logger=many", f"logger.mlflow.tracking_uri={server}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    first = states(tmp_path)
    parent = check_mlflow(server, "digits", first)

    # TensorBoard: a folder per trial, each an HParams session with the trial's parameters and its end
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    (sweep_dir,) = sweep_dirs(tmp_path)
    folders = sorted((sweep_dir / "tensorboard").iterdir())
    assert [f.name for f in folders] == sorted(f"trial-{n}" for n in first)
    for folder in folders:
        events = EventAccumulator(str(folder))
        events.Reload()
        content = events.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        assert start.session_start_info.hparams["optimizer.lr"].number_value in (0.03, 0.00003)
        assert "_hparams_/session_end_info" in content and "_hparams_/experiment" in content
        assert len(events.Scalars("val_accuracy")) in (1, 2, 3)

    # CSV: the sweep's one long-format file, a state row per trial
    import pandas as pd

    table = pd.read_csv(sweep_dir / "metrics.csv")
    ended = table[table.metric == "state"].set_index("trial").value.to_dict()
    assert ended == {n: {"COMPLETE": "completed", "PRUNED": "pruned"}[s] for n, s in first.items()}

    # the same command again resumes the study: its trials join the same parent
    more = train_cli(*SWEEP, "hydra.sweeper.n_trials=2", "logger=mlflow", f"logger.mlflow.tracking_uri={server}",
                     cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-3000:]
    assert len(states(tmp_path)) == 10
    assert check_mlflow(server, "digits", states(tmp_path)) == parent


@on_the_server
def test_mlflow_on_ray_pool_links_children_to_the_parent(tmp_path, server):
    result = train_cli(*SWEEP, "hydra/launcher=ray_pool", "logger=mlflow", f"logger.mlflow.tracking_uri={server}",
                       "logger.mlflow.experiment_name=on_ray", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    check_mlflow(server, "on_ray", states(tmp_path))


@pytest.mark.parametrize("launcher", ["slurm_pool hydra.launcher.executor=local", "basic"])
def test_mlflow_groups_the_trials_of_slurm_pool_and_hydras_own_launcher(tmp_path, launcher):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train_cli("--multirun", "search=digits", "data=digits", "trainer.epochs=2", "hydra.sweeper.n_trials=2",
                       *f"hydra/launcher={launcher}".split(), "logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
                       "hydra.sweeper.report=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.tracking.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r is not parent]
    trials = optuna.load_study(study_name="digits", storage=f"sqlite:///{tmp_path / 'multirun/studies/digits.db'}")
    why = [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials.trials]  # for a failure
    assert sorted(r.info.run_name for r in children) == ["trial-0", "trial-1"], (why, result.stderr[-3000:])
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.info.status for r in children} <= {"FINISHED", "KILLED"}


def test_an_own_app_links_its_runs_to_the_sweeps_parent(tmp_path):
    result = run_app("--multirun", script=EXAMPLES / "tracked_app.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == "tracked"]
    children = [r for r in runs if r is not parent]
    assert len(children) == 8
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.info.status for r in children} <= {"FINISHED", "KILLED"}


def wandb_records(path: Path) -> list:
    """The records of a W&B run file (W&B's own protobuf messages, in LevelDB's log format: 32 KiB blocks of
    checksummed chunks, after a 7-byte W&B header)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunk, records = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7]) if left >= 7 else (0, 0)
        if left < 7 or (kind == 0 and length == 0):  # a block's padding
            pos += left
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            records.append(wandb_internal_pb2.Record.FromString(chunk))
            chunk = b""
    return records


def test_wandb_offline_runs_grouped_by_study(tmp_path):
    pytest.importorskip("wandb")
    result = train_cli(*SWEEP, "hydra.sweeper.n_trials=3", "logger=wandb", cwd=tmp_path,
                       env={"WANDB_MODE": "offline", "HOME": str(tmp_path), "WANDB_API_KEY": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    found = states(tmp_path)
    runs = sorted(tmp_path.glob("multirun/*/*/*/wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 3
    names = set()
    for path in runs:
        records = wandb_records(path)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert run.run_group == "digits" and run.project == "sweep"
        names.add(run.display_name)
        assert "optimizer.lr" in {u.key for u in run.config.update}
        history = [r for r in records if r.WhichOneof("record_type") == "history"]
        summary = {u.key: u.value_json for r in records if r.WhichOneof("record_type") == "summary"
                   for u in r.summary.update if u.key}
        number = int(run.display_name.split("-")[1])
        assert summary["state"] == {"COMPLETE": '"completed"', "PRUNED": '"pruned"'}[found[number]]
        assert (len(history) == 3) == (found[number] == "COMPLETE") and history
        assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [0]
    assert names == {f"trial-{n}" for n in found}


# ---------------------------------------------------------------- what goes wrong says so in one line


def test_an_unreachable_tracking_server_stops_the_sweep_before_any_trial(tmp_path):
    result = train_cli(*SWEEP, "logger=mlflow", f"logger.mlflow.tracking_uri=http://127.0.0.1:{free_port()}",
                       cwd=tmp_path)
    assert_one_line_error(result, "hydra.sweeper.tracker", "cannot be reached")
    assert set(states(tmp_path).values()) <= {"WAITING"}  # the enqueued trial waits for the rerun


def test_a_tracking_uri_with_a_password_is_refused_and_never_printed(tmp_path):
    result = train_cli("data=digits", "trainer.epochs=1", "logger=mlflow",
                       "logger.mlflow.tracking_uri=http://me:S3cret@127.0.0.1:1", cwd=tmp_path)
    line = assert_one_line_error(result, "logger.mlflow.tracking_uri", "${oc.env:VAR}")
    assert "S3cret" not in result.stderr + result.stdout, line


def test_a_missing_tracker_package_names_the_extra(tmp_path):
    shadow = tmp_path / "shadow" / "wandb"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named wandb')\n")
    result = train_cli("data=digits", "trainer.epochs=1", "logger=wandb", cwd=tmp_path,
                       env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert_one_line_error(result, "logger.wandb needs wandb", "pip install 'sweep[wandb]'")


def test_wandb_online_without_a_key_says_how_to_log_in(tmp_path):
    pytest.importorskip("wandb")
    result = train_cli("data=digits", "trainer.epochs=1", "logger=wandb", cwd=tmp_path,
                       env={"HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_MODE": ""})
    assert_one_line_error(result, "logger.wandb", "WANDB_API_KEY", "mode=offline")


def test_a_logger_target_that_does_not_import_is_one_line(tmp_path):
    result = train_cli("data=digits", "trainer.epochs=1", "+logger.mine._target_=no_such_module.Logger",
                       cwd=tmp_path)
    assert_one_line_error(result, "logger.mine._target_=no_such_module.Logger cannot be created")


def test_optuna_integrations_mlflow_callback_logs_a_run_per_trial(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_app("--multirun", "hydra.sweeper.n_trials=4", "hydra/sweeper/pruner=median",
                     "hydra.sweeper.pruner.n_startup_trials=1",
                     f"hydra.sweeper.callbacks=[{{_target_:optuna_integration.mlflow.MLflowCallback,"
                     f"tracking_uri:'{uri}',metric_name:score}}]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.tracking.MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "curve"]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4
    assert all({"lr", "width"} <= set(r.data.params) for r in runs)
    assert {r.data.tags.get("state") for r in runs} <= {"COMPLETE", "PRUNED"}
    completed = [r for r in runs if r.data.tags.get("state") == "COMPLETE"]
    assert completed and all("score" in r.data.metrics for r in completed)
