"""nnlab's Hydra launcher for a running Ray cluster (`hydra/launcher=ray`): see ray_launcher.py."""
