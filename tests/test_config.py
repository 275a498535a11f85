import pytest
from omegaconf import OmegaConf

from sweep.config import UserError, check_config


def test_defaults_compose_to_the_tutorial_mlp_on_cifar10(make_cfg):
    cfg = make_cfg()
    assert cfg.data.name == "cifar10" and cfg.data.val_size == 5000
    assert list(cfg.model.hidden_sizes) == [128]
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == ("sgd", 1e-3, 0.9, 1e-4)
    assert cfg.data.batch_size == 256 and cfg.trainer.epochs == 50
    check_config(cfg)


@pytest.mark.parametrize("overrides, key, expected", [
    (["model.hidden_sizes=[256,128]"], "model.hidden_sizes", [256, 128]),
    (["model.width=512", "model.depth=3"], "model.hidden_sizes", [512, 512, 512]),
    (["optimizer=adamw", "optimizer.lr=3e-3"], "optimizer", {"name": "adamw", "lr": 3e-3}),
    (["optimizer=nesterov"], "optimizer", {"name": "sgd", "nesterov": True}),
    (["data.batch_size=512"], "data.batch_size", 512),
    (["trainer.device=cpu"], "trainer.device", "cpu"),
    (["data=digits", "trainer.epochs=3"], "data", {"name": "digits", "val_size": 300}),
    (["+experiment=tutorial"], "data.normalize", "unit"),
])
def test_documented_overrides_compose(make_cfg, overrides, key, expected):
    cfg = make_cfg(*overrides)
    value = OmegaConf.select(cfg, key)
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(expected, dict):
        assert {k: value[k] for k in expected} == expected
    else:
        assert value == expected
    check_config(cfg)


def test_search_presets_declare_spaces_over_real_keys(make_cfg):
    for preset in ("default", "digits", "cifar10"):
        cfg = make_cfg(f"search={preset}", "hydra.sweeper.n_trials=1")
        params = cfg.hydra.sweeper.params if "hydra" in cfg else None
        assert params is None or len(params) > 0


@pytest.mark.parametrize("overrides, fragment", [
    (["model.hidden_sizes=[]"], "model.hidden_sizes"),
    (["model.hidden_sizes=[64,0]"], "model.hidden_sizes"),
    (["model.depth=0"], "model.hidden_sizes"),
    (["model.norm=group"], "model.norm"),
    (["model.dropout=1.0"], "model.dropout"),
    (["optimizer.lr=0"], "optimizer.lr"),
    (["optimizer.lr=-0.1"], "optimizer.lr"),
    (["optimizer=adamw", "optimizer.nesterov=true"], "optimizer.nesterov"),
    (["data.batch_size=0"], "data.batch_size"),
    (["data.val_size=0"], "data.val_size"),
    (["trainer.device=tpu"], "trainer.device"),
    (["trainer.schedule=step"], "trainer.schedule"),
    (["trainer.epochs=0"], "trainer.epochs"),
])
def test_bad_settings_are_named(make_cfg, overrides, fragment):
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")) as e:
        check_config(make_cfg(*overrides))
    assert "\n" not in str(e.value)
