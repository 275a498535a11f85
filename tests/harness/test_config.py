import pytest
from omegaconf import OmegaConf

from sweep.mlp.config import check_config
from sweep.errors import UserError


def test_defaults_compose_to_the_tutorial_mlp_on_cifar10(make_cfg):
    cfg = make_cfg()
    assert cfg.data.name == "cifar10" and cfg.data.val_size == 5000
    assert list(cfg.model.hidden_sizes) == [128]
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == ("sgd", 1e-3, 0.9, 1e-4)
    assert cfg.data.batch_size == 256 and cfg.trainer.epochs == 50 and cfg.trainer.precision == "auto"
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
    (["+experiment=cifar10_mlp_best"], "trainer.precision", "auto"),
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


@pytest.mark.parametrize("preset, expected_keys", [
    ("default", {"model.depth", "model.width", "optimizer", "optimizer.lr"}),
    ("digits", {"model.depth", "model.width", "optimizer.lr"}),
    ("cifar10", {"model.depth", "model.width", "data.crop_padding", "trainer.schedule"}),
])
def test_search_presets_declare_spaces_over_real_keys(make_cfg, preset, expected_keys):
    cfg = make_cfg(f"search={preset}", hydra=True)
    params = cfg.hydra.sweeper.params
    assert expected_keys <= set(params)
    for key in params:  # every key of the space is a real setting or config group of the app
        assert OmegaConf.select(cfg, key) is not None or key in cfg, key


def test_the_app_configures_the_sweeper_for_itself(make_cfg):
    sweeper = make_cfg(hydra=True).hydra.sweeper
    assert sweeper.direction == "maximize" and list(sweeper.metric_names) == ["val_accuracy"]
    assert sweeper.check == "sweep.mlp.config.check_sweep" and sweeper.storage.startswith("sqlite:///multirun/studies/")
    assert sweeper.pruner.n_warmup_steps == 2  # this app's median preset, not the plugin's Optuna defaults


@pytest.mark.parametrize("overrides, fragment", [
    (["model.hidden_sizes=[]"], "model.hidden_sizes"),
    (["model.hidden_sizes=[64,0]"], "model.hidden_sizes"),
    (["model.depth=0"], "model.depth"),
    (["model.depth=1.5"], "model.depth"),
    (["model.width=true"], "model.width"),
    (["model.norm=group"], "model.norm"),
    (["model.dropout=1.0"], "model.dropout"),
    (["+model.foo=1"], "model.foo"),
    (["+trainer.epoch=3"], "trainer.epoch"),
    (["optimizer.lr=0"], "optimizer.lr"),
    (["optimizer.lr=-0.1"], "optimizer.lr"),
    (["optimizer=adamw", "optimizer.nesterov=true"], "optimizer.nesterov"),
    (["data.batch_size=0"], "data.batch_size"),
    (["data.batch_size=true"], "data.batch_size"),
    (["data.val_size=0"], "data.val_size"),
    (["data.split_seed=abc"], "data.split_seed"),
    (["data.split_seed=1.5"], "data.split_seed"),
    (["data.flip=maybe"], "data.flip"),
    (["data=imagefolder"], "data.root"),
    (["trainer.device=tpu"], "trainer.device"),
    (["trainer.schedule=step"], "trainer.schedule"),
    (["trainer.epochs=0"], "trainer.epochs"),
    (["trainer.epochs=true"], "trainer.epochs"),
    (["trainer.save_checkpoint=maybe"], "trainer.save_checkpoint"),
    (["trainer.precision=fp8"], "trainer.precision"),
])
def test_bad_settings_are_named(make_cfg, overrides, fragment):
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")) as e:
        check_config(make_cfg(*overrides))
    assert "\n" not in str(e.value)
