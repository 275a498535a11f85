import json

import pytest
import torch

from helpers import run_cli
from mlp import train_cli, write_imagefolder
from sweep.mlp.config import UserError
from sweep.mlp.data import build_splits
from sweep.mlp.evaluate import evaluate_checkpoint, find_checkpoint, load_model, predict
from sweep.mlp.train import METRIC, train


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Evaluation caches decoded data in ~/.cache/sweep (a checkpoint never says where): a home of the test's own."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_digits_checkpoint_round_trips_and_scores_on_the_test_split(make_cfg, tmp_path):
    cfg = make_cfg("data=digits", "trainer.epochs=15", "trainer.save_checkpoint=true", "model.norm=batch")
    metrics = train(cfg, tmp_path)
    model, saved_cfg, ckpt = load_model(tmp_path / "best.pt", torch.device("cpu"))
    # The reloaded weights reproduce the validation accuracy the best epoch had in memory.
    val = build_splits(saved_cfg.data, torch.device("cpu")).val
    assert (predict(model, val) == val.y).double().mean().item() == ckpt[METRIC] == metrics[METRIC]

    result = evaluate_checkpoint(find_checkpoint(tmp_path), tmp_path)
    written = json.loads((tmp_path / "test_metrics.json").read_text())
    assert written["test_accuracy"] == result["test_accuracy"] > 0.8
    assert written["test_images"] == 359 and len(written["per_class_accuracy"]) == 10
    assert sum(map(sum, written["confusion_matrix"])) == 359
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 5000


def test_imagefolder_test_split_from_the_command_line(tmp_path, home):
    root = write_imagefolder(tmp_path / "imgs", per_class=20, test_per_class=5)
    trained = train_cli("data=imagefolder", f"data.root={root}", "data.val_size=15", "trainer.epochs=10",
                        "optimizer=adamw", "optimizer.lr=3e-3", "trainer.save_checkpoint=true", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    (run,) = [p.parent for p in tmp_path.glob("outputs/*/*/best.pt")]
    refused = run_cli("sweep.evaluate", str(run), cwd=tmp_path)  # the data lies outside the run: the user says where
    assert refused.returncode == 2 and "--data-root" in refused.stderr and "Traceback" not in refused.stderr
    result = run_cli("sweep.evaluate", str(run), "--data-root", str(root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["test_images"] == 15 and set(metrics["per_class_accuracy"]) == {"cat", "dog", "frog"}
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in result.stdout
    assert len(list((home / ".cache" / "sweep").glob("imagefolder-*.pt"))) == 1


def test_no_test_split_is_refused(make_cfg, tmp_path):
    root = write_imagefolder(tmp_path / "imgs")
    train(make_cfg("data=imagefolder", f"data.root={root}", "data.val_size=6", "trainer.epochs=1",
                   "trainer.save_checkpoint=true"), tmp_path / "run")
    with pytest.raises(UserError, match="no test split"):
        evaluate_checkpoint(tmp_path / "run" / "best.pt", tmp_path / "run", data_root=root)
    result = run_cli("sweep.evaluate", str(tmp_path / "run"), "--data-root", str(root), cwd=tmp_path)
    assert result.returncode != 0 and "no test split" in result.stderr and "Traceback" not in result.stderr


def test_a_checkpoint_never_decides_a_download_or_a_folder(make_cfg, tmp_path):
    """A best.pt whose config says data=cifar10 download=true root=<somewhere>: nothing is fetched or created."""
    train(make_cfg("data=digits", "trainer.epochs=1", "trainer.save_checkpoint=true"), tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    planted = tmp_path / "elsewhere" / "fetch-here"
    ckpt["config"]["data"].update(name="cifar10", download=True, root=str(planted), cache_dir=str(tmp_path / "c"))
    torch.save(ckpt, tmp_path / "run" / "best.pt")
    result = run_cli("sweep.evaluate", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2 and "--data-root" in result.stderr.strip().splitlines()[-1]
    inside = tmp_path / "run" / "data"  # a root inside the folder evaluated is the user's own: read, never fetched
    ckpt["config"]["data"]["root"] = str(inside)
    torch.save(ckpt, tmp_path / "run" / "best.pt")
    result = run_cli("sweep.evaluate", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2 and "data.download=false" in result.stderr
    assert not planted.parent.exists() and not inside.exists() and not (tmp_path / "c").exists()


def test_run_without_checkpoint_says_how_to_get_one(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    result = run_cli("sweep.evaluate", str(tmp_path), cwd=tmp_path)
    assert result.returncode != 0 and "trainer.save_checkpoint=true" in result.stderr


def test_sweep_directory_evaluates_its_best_trial(tmp_path):
    swept = train_cli("--multirun", "data=digits", "search=digits", "trainer.epochs=3", "hydra.sweeper.n_trials=2",
                      "hydra/sweeper/pruner=none", "trainer.save_checkpoint=true", "hydra.sweeper.report=false", cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    (sweep_dir,) = [p.parent for p in tmp_path.glob("multirun/*/*/study.json")]
    result = run_cli("sweep.evaluate", str(sweep_dir), "--out", str(tmp_path / "final"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "final" / "test_metrics.json").read_text())
    best = max(json.loads(p.read_text())[METRIC] for p in sweep_dir.glob("*/metrics.json"))
    assert metrics["val_accuracy"] == best


@pytest.fixture
def checkpoint(make_cfg, tmp_path):
    train(make_cfg("data=digits", "trainer.epochs=2", "trainer.save_checkpoint=true"), tmp_path / "run")
    return tmp_path / "run" / "best.pt"


def _evaluate(capsys, *args) -> tuple[int, str]:
    from sweep.mlp.evaluate import cli

    code = cli([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 1, err
    return code, err[0] if err else ""


def test_a_checkpoint_is_data_nothing_it_names_is_unpickled(checkpoint, tmp_path, capsys):
    """A best.pt whose config points CIFAR-10's reader at a folder of hostile pickles: no code runs."""
    import os
    import pickle

    hostile = tmp_path / "hostile" / "cifar-10-batches-py"
    hostile.mkdir(parents=True)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        with open(hostile / name, "wb") as f:
            pickle.dump({"data": Payload(), "labels": [0], "label_names": ["a"] * 10}, f)
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"]["data"] = {**ckpt["config"]["data"], "name": "cifar10", "root": str(tmp_path / "hostile"),
                              "download": False}
    torch.save(ckpt, checkpoint)
    code, err = _evaluate(capsys, checkpoint.parent)  # a folder outside the run: read only if the user names it
    assert code == 2 and "--data-root" in err
    code, err = _evaluate(capsys, checkpoint.parent, "--data-root", tmp_path / "hostile")  # named: still never run
    assert code == 2 and err.startswith("error: data.root: ") and "not a CIFAR-10 python file" in err
    assert not marker.exists()


@pytest.mark.parametrize("damage, fragment", [
    ("truncated", "is not a readable checkpoint"),
    ("no config", "has no 'config'"),
    ("wrong weights", "its weights do not match its config"),
    ("bad config", "its config is invalid: model.depth"),
])
def test_damaged_checkpoints_are_one_line(checkpoint, capsys, damage, fragment):
    if damage == "truncated":
        data = checkpoint.read_bytes()
        checkpoint.write_bytes(data[: len(data) // 2])
    else:
        ckpt = torch.load(checkpoint, weights_only=True)
        if damage == "no config":
            del ckpt["config"]
        elif damage == "wrong weights":
            ckpt["config"]["model"]["hidden_sizes"] = [7]
            ckpt["config"]["model"]["width"] = 7
        else:
            ckpt["config"]["model"]["depth"] = 0
        torch.save(ckpt, checkpoint)
    code, err = _evaluate(capsys, checkpoint.parent)
    assert code == 2 and err.startswith("error: ") and fragment in err, err


def test_bad_device_and_moved_database_are_one_line(checkpoint, tmp_path, capsys):
    code, err = _evaluate(capsys, checkpoint.parent, "--device", "foo")
    assert code == 2 and "--device 'foo' is invalid" in err
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "study.json").write_text('{"storage": "sqlite:////moved/away.db", "study_name": "x"}')
    code, err = _evaluate(capsys, sweep_dir)
    assert code == 2 and "no such file /moved/away.db" in err
