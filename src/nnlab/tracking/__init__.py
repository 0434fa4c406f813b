"""Tracking in MLflow: the store (finding, checking, opening it), one run per job (`track`), the model's files
and MLflow Model (`logged_model`), and runs whose process died (`runs`). Keras is not imported here, so the
commands that only read a store stay light."""

import os

# MLflow prints a server's run URL on stdout as a run ends, with any user name and password the URL carries;
# nnlab prints its own line, without them (nnlab.tracking.accounts.redact).
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# A bar per file read from a store (a run's config.yaml, a model) is noise on stderr, where nnlab's one-sentence
# errors go: off unless the user turns it on.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
