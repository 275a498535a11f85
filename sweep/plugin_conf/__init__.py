"""Configs this plugin adds to Hydra's search path (hydra_plugins/sweep_plugin's SweepSearchPath): the pruner
group as YAML files, so an app that ships its own presets under the same names (conf/hydra/sweeper/pruner/median.yaml)
overrides them the ordinary way, without Hydra 1.3's schema-matching warning that a structured config of the same
name would bring."""
