"""nnlab's Optuna sweeper (`hydra/sweeper=optuna`) on the current Optuna: see optuna_sweeper.py."""
