"""nnlab's SLURM launcher (`hydra/launcher=slurm`): submitit's, able to follow jobs where the cluster keeps no
accounting; see slurm_launcher.py."""
