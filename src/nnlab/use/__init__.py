"""Using a trained model: a finished run's model, config and preprocessing record (`trained`), new inputs read
as training read its data (`inputs`), and the commands `nnlab predict`, `nnlab evaluate` and `nnlab detect`."""
