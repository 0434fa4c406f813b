"""Tracking in MLflow: the store (finding, checking, opening it), one run per job (`track`), the model's files
and MLflow Model (`logged_model`), and runs whose process died (`runs`). Keras is not imported here, so the
commands that only read a store stay light."""
