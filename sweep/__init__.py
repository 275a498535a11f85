"""sweep: Hydra-configured hyperparameter sweeps for PyTorch image classifiers."""
