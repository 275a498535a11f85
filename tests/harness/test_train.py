import csv
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import assert_one_line_error
from mlp import Recorder, train_cli, write_cifar10, write_imagefolder
from sweep.mlp.train import LAST, METRIC, lr_factor, train


def _run_dir(cwd: Path) -> Path:
    (metrics,) = cwd.glob("outputs/*/*/metrics.json")
    return metrics.parent


def test_cli_trains_digits_and_writes_results(tmp_path):
    result = train_cli("data=digits", "model.hidden_sizes=[256,128]", "trainer.epochs=20", "trainer.seed=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = _run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics[METRIC] > 0.8
    assert metrics["status"] == "completed" and metrics["epochs_run"] == 20 and 1 <= metrics["best_epoch"] <= 20
    assert metrics["param_count"] == 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert metrics["device"] == "cpu" and metrics["train_seconds"] > 0
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 21))
    assert max(float(r["val_accuracy"]) for r in rows) == pytest.approx(metrics[METRIC])
    assert "epoch 20/20" in (run / "train.log").read_text()


def test_same_seed_same_accuracy_on_cpu(make_cfg, tmp_path):
    cfg = make_cfg("data=digits", "trainer.epochs=3", "model.norm=batch", "model.dropout=0.2", "data.flip=true",
                   "data.crop_padding=1", "trainer.schedule=onecycle", "trainer.device=cpu")
    a = train(cfg, tmp_path / "a")
    b = train(cfg, tmp_path / "b")
    c = train(make_cfg("data=digits", "trainer.epochs=3", "trainer.seed=7"), tmp_path / "c")
    assert a[METRIC] == b[METRIC]
    assert (tmp_path / "a" / "history.csv").read_text().split("\n")[1].split(",")[:5] == \
           (tmp_path / "b" / "history.csv").read_text().split("\n")[1].split(",")[:5]
    assert c[METRIC] != a[METRIC] or c["final_val_accuracy"] != a["final_val_accuracy"]


def test_the_trial_hears_every_epoch_and_can_stop_the_run_as_pruned(make_cfg, tmp_path):
    trial = Recorder(prune_at=2)
    metrics = train(make_cfg("data=digits", "trainer.epochs=5"), tmp_path, trial)
    assert [step for step, _ in trial.reports] == [1, 2]
    assert trial.reports[-1][1] == metrics["final_val_accuracy"]
    assert metrics["status"] == "pruned" and metrics["epochs_run"] == 2
    assert not (tmp_path / LAST).exists()  # an ended run leaves nothing to resume


def test_a_trackers_run_ends_with_the_runs_state_even_when_training_dies(make_cfg, tmp_path):
    """logger=csv as the example tracker: each epoch logged once, and the run closed with its state: completed,
    pruned, or failed when training raised (the logger is closed in a finally)."""
    import pandas as pd

    for name, trial in (("done", Recorder()), ("pruned", Recorder(prune_at=2)), ("died", Recorder(crash_at=2))):
        cfg = make_cfg("data=digits", "trainer.epochs=3", "logger=csv", f"logger.csv.path={tmp_path / name}.csv")
        try:
            train(cfg, tmp_path / name, trial)
        except KeyboardInterrupt:
            pass
    states = {name: pd.read_csv(tmp_path / f"{name}.csv").query("metric == 'state'").value.tolist()
              for name in ("done", "pruned", "died")}
    assert states == {"done": ["completed"], "pruned": ["pruned"], "died": ["failed"]}
    epochs = pd.read_csv(tmp_path / "done.csv").query("metric == 'val_accuracy'").step.tolist()
    assert epochs == [1, 2, 3]


def test_a_prune_answer_after_the_last_epoch_leaves_the_run_complete(make_cfg, tmp_path):
    metrics = train(make_cfg("data=digits", "trainer.epochs=2"), tmp_path, Recorder(prune_at=2))
    assert metrics["status"] == "completed" and metrics["epochs_run"] == 2


def test_a_run_killed_after_epoch_k_resumes_to_the_same_result(make_cfg, tmp_path):
    cfg = make_cfg("data=digits", "trainer.epochs=5", "model.norm=batch", "model.dropout=0.2", "data.flip=true",
                   "data.crop_padding=1", "trainer.schedule=onecycle", "optimizer=adamw", "trainer.device=cpu")
    whole = train(cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):  # dies right after epoch 2's state was saved
        train(cfg, tmp_path / "broken", Recorder(crash_at=2))
    assert (tmp_path / "broken" / LAST).exists()
    again = Recorder()
    resumed = train(cfg, tmp_path / "broken", again)
    assert [step for step, _ in again.reports] == [1, 2, 3, 4, 5]  # the history, then the new epochs
    for key in (METRIC, "final_val_accuracy", "best_epoch", "epochs_run", "status"):
        assert resumed[key] == whole[key], key
    assert (tmp_path / "whole" / "history.csv").read_text().splitlines()[-1].split(",")[:6] == \
           (tmp_path / "broken" / "history.csv").read_text().splitlines()[-1].split(",")[:6]


def test_a_paused_run_keeps_its_state_of_that_epoch_and_a_promoted_one_ends_as_an_unbroken_run(make_cfg, tmp_path):
    cfg = make_cfg("data=digits", "trainer.epochs=4", "optimizer=adamw", "trainer.device=cpu")
    whole = train(cfg, tmp_path / "whole")
    paused = train(cfg, tmp_path / "asha", Recorder(prune_at=2, pause=True))  # asha: below its rung, for now
    assert paused["status"] == "paused" and paused["epochs_run"] == 2
    state = torch.load(tmp_path / "asha" / LAST, weights_only=True)  # written at the pause, not 30 s before
    assert state["metrics"]["epochs_run"] == 2
    again = Recorder()
    promoted = train(cfg, tmp_path / "asha", again)  # its rung promoted it: the next run goes on from epoch 2
    assert [step for step, _ in again.reports] == [1, 2, 3, 4]  # the history heard again, then the new epochs
    for key in (METRIC, "final_val_accuracy", "best_epoch", "epochs_run", "status"):
        assert promoted[key] == whole[key], key
    assert not (tmp_path / "asha" / LAST).exists()


def test_a_retried_sweep_trial_resumes_from_the_last_checkpoint_of_the_run_it_retries(make_cfg, tmp_path, caplog):
    # What a sweep does after a worker died: the retry trial names the failed one, whose run folder holds last.pt.
    import optuna

    from sweep.attrs import FAILED_TRIAL, RUN_DIR
    from sweep.sweeper.task import SweepTrial

    cfg = make_cfg("data=digits", "trainer.epochs=4")
    with pytest.raises(KeyboardInterrupt):  # the worker dies in epoch 2, its last.pt from epoch 1
        train(cfg, tmp_path / "dead", Recorder(crash_at=2))
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    dead = study.ask()
    dead.set_user_attr(RUN_DIR, str(tmp_path / "dead"))
    study.tell(dead, state=optuna.trial.TrialState.FAIL)
    retry = study.ask()
    storage.set_trial_system_attr(retry._trial_id, FAILED_TRIAL, dead.number)
    with caplog.at_level("INFO"):
        metrics = train(cfg, tmp_path / "retry", SweepTrial(study, storage, retry._trial_id, retry.number))
    assert re.search(r"resumed after epoch [12]\b", caplog.text) and metrics["epochs_run"] == 4, caplog.text
    epochs = [int(line.split(",")[0]) for line in (tmp_path / "retry" / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [1, 2, 3, 4]  # the dead run's history carried over, then on
    assert sorted(storage.get_trial(retry._trial_id).intermediate_values) == [1, 2, 3, 4]


def test_a_foreign_or_damaged_last_checkpoint_is_not_trusted(make_cfg, tmp_path, caplog):
    cfg = make_cfg("data=digits", "trainer.epochs=3")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, Recorder(crash_at=1))
    other = make_cfg("data=digits", "trainer.epochs=3", "optimizer.lr=0.5")
    assert train(other, tmp_path)["epochs_run"] == 3
    assert "different config" in caplog.text  # started over instead of resuming another config's state
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, Recorder(crash_at=1))
    data = (tmp_path / LAST).read_bytes()
    (tmp_path / LAST).write_bytes(data[: len(data) // 2])  # a torn write
    assert train(cfg, tmp_path)["epochs_run"] == 3
    assert "not a readable checkpoint" in caplog.text


def test_precision_auto_records_what_it_chose(make_cfg, tmp_path):
    from sweep.mlp.device import bf16_native

    metrics = train(make_cfg("data=digits", "trainer.epochs=1", "trainer.device=cpu"), tmp_path)
    expected = "bf16" if bf16_native(torch.device("cpu"), tmp_path / "cache") else "fp32"
    assert metrics["precision"] == expected
    assert json.loads((tmp_path / "metrics.json").read_text())["precision"] == expected


def test_forced_bf16_without_native_support_warns_once(make_cfg, tmp_path, caplog, monkeypatch):
    import sweep.mlp.device

    monkeypatch.setattr(sweep.mlp.device, "bf16_native", lambda device, cache_dir=None: False)
    metrics = train(make_cfg("data=digits", "trainer.epochs=1", "trainer.precision=bf16"), tmp_path)
    assert metrics["precision"] == "bf16"
    warnings = [r for r in caplog.records if "no native bf16" in r.getMessage()]
    assert len(warnings) == 1 and "trainer.precision=auto" in warnings[0].getMessage()


def test_checkpoint_holds_weights_and_config_only(make_cfg, tmp_path):
    metrics = train(make_cfg("data=digits", "trainer.epochs=2", "trainer.save_checkpoint=true"), tmp_path)
    ckpt = torch.load(tmp_path / "best.pt", weights_only=True)  # refuses anything that runs code
    assert ckpt["epoch"] == metrics["best_epoch"] and ckpt["config"]["data"]["name"] == "digits"
    assert ckpt["input_shape"] == [1, 8, 8] and "0.weight" not in ckpt["model"] and "1.weight" in ckpt["model"]


def test_lr_schedules():
    assert lr_factor("none", 50, 100) == 1.0
    assert lr_factor("cosine", 0, 100) == 1.0 and lr_factor("cosine", 100, 100) == pytest.approx(0.0)
    assert lr_factor("onecycle", 0, 100) == pytest.approx(0.04) and lr_factor("onecycle", 30, 100) == pytest.approx(1.0)
    assert lr_factor("onecycle", 100, 100) == pytest.approx(0.0)


def test_divergence_stops_the_run_with_status_diverged(tmp_path):
    result = train_cli("data=digits", "optimizer.lr=1e12", "trainer.epochs=5", cwd=tmp_path)
    assert_one_line_error(result, "diverged")
    metrics = json.loads((_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["epochs_run"] < 5


@pytest.mark.parametrize("args, fragments", [
    (["model.hidden_sizes=[]"], ["model.hidden_sizes", "positive integers"]),
    (["model.hidden_sizes=[64,-1]"], ["model.hidden_sizes"]),
    (["optimizer.lr=0"], ["optimizer.lr", "> 0"]),
    (["data.batch_size=-4"], ["data.batch_size", "an integer >= 1"]),
    (["data.val_size=1438"], ["data.val_size", "has 1438"]),
    (["trainer.device=tpu"], ["trainer.device", "cpu"]),
    (["data.split_seed=abc"], ["data.split_seed", "integer"]),
    (["model.width=999999999"], ["model.hidden_sizes", "GiB", "model.width"]),
])
def test_bad_input_on_the_command_line(tmp_path, args, fragments):
    assert_one_line_error(train_cli("data=digits", "trainer.epochs=1", *args, cwd=tmp_path), *fragments)


def test_cuda_without_a_gpu_is_refused(tmp_path):
    result = train_cli("data=digits", "trainer.device=cuda", cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert_one_line_error(result, "trainer.device", "no CUDA GPU")


def test_imagefolder_problems_on_the_command_line(tmp_path):
    assert_one_line_error(train_cli("data=imagefolder", f"data.root={tmp_path / 'nope'}", cwd=tmp_path), "data.root", "nope")
    root = write_imagefolder(tmp_path / "imgs")
    (root / "train" / "cat" / "003.png").write_bytes(b"\x89PNG broken")
    assert_one_line_error(train_cli("data=imagefolder", f"data.root={root}", cwd=tmp_path), "cat/003.png")


def test_imagefolder_trains(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", per_class=20)
    result = train_cli("data=imagefolder", f"data.root={root}", "data.val_size=15", "trainer.epochs=15",
                       "optimizer=adamw", "optimizer.lr=3e-3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((_run_dir(tmp_path) / "metrics.json").read_text())[METRIC] > 0.6


def test_cifar10_unreachable_says_how_to_work_offline(tmp_path):
    # A proxy on a closed loopback port makes the download fail at once, online or not.
    env = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
    result = train_cli(f"data.root={tmp_path / 'c10'}", cwd=tmp_path, env=env)
    assert_one_line_error(result, "data.root", "data=digits")


def test_cifar10_trains_from_batch_files(tmp_path):
    write_cifar10(tmp_path / "c10", per_batch=10)
    result = train_cli(f"data.root={tmp_path / 'c10'}", "data.val_size=10", "trainer.epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((_run_dir(tmp_path) / "metrics.json").read_text())["epochs_run"] == 1


def test_help_lists_the_groups_and_the_commands(tmp_path):
    result = train_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for line in ["python -m sweep.train --multirun", "python -m sweep.report <sweep dir>", "+experiment=NAME",
                 "data: cifar10, digits, imagefolder", "search: cifar10, default, digits",
                 "experiment: cifar10_mlp_best, tutorial", "hydra/sweeper/pruner=none|median|halving|hyperband"]:
        assert line in text, line
    assert "width: 128" in text  # Hydra's composed config follows


def test_the_installed_wheel_trains_from_its_own_configs(tmp_path):
    from helpers import install_wheel

    python = install_wheel(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([python, "-m", "sweep.train", "data=digits", "trainer.epochs=1",
                             f"data.cache_dir={tmp_path / 'cache'}"], cwd=elsewhere, capture_output=True, text=True,
                            timeout=600, start_new_session=True)
    assert result.returncode == 0, result.stderr
    assert "val_accuracy" in result.stdout + result.stderr
