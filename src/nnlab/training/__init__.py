"""Training: compile and fit a model on its data, stage by stage, under a time budget, with per-epoch
checkpoints; the optimizers and schedules; several devices. Nothing here imports tracking or the CLI:
tracking hooks in through Keras callbacks that the job hands to `train.train`."""
