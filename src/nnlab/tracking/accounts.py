"""Who a client of a tracking server is, and what that means for names: each account's experiments are its own
(`<account>/<name>`), a reader's `name` finds every account's that it may read, and no password reaches a run.

A client signs in the MLflow way: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, or MLflow's credentials
file (~/.mlflow/credentials). A URL that carries them (http://alice:secret@host) works too, and is recorded
without them. Light to import (MLflow is imported where needed): the CLI redacts every error sentence with it."""

import re

ACCOUNT_TAG = "nnlab.account"  # who logged a run on a server (reports across students show it)
CREDENTIALS = re.compile(r"([A-Za-z][\w+.-]*://)[^/\s'\"]+@")  # scheme://user:password@ -> scheme://


def account(uri: str) -> str | None:
    """The account a client of a tracking server signs in as (MLFLOW_TRACKING_USERNAME, else MLflow's credentials
    file); None for a local store."""
    if not uri.startswith(("http://", "https://")):
        return None
    from urllib.parse import unquote, urlsplit

    from mlflow.utils.credentials import read_mlflow_creds

    in_url = urlsplit(uri).username
    return unquote(in_url) if in_url else read_mlflow_creds().username or None


def own_experiment(uri: str, name: str) -> str:
    """The experiment a job logs to: on a server with accounts, `<account>/<name>`, so that two students'
    `fashion_mnist` runs do not collide (MLflow's experiment names are global, and each is private to whoever
    made it); elsewhere `name` itself."""
    user = account(uri)
    return name if user is None or name.startswith(f"{user}/") else f"{user}/{name}"


def experiments_named(client, name: str) -> list:
    """The experiments a reader means by `name`: the one of that name, and every account's `<account>/<name>` that
    this client may read (a student: their own; a teacher: every student's)."""
    quoted = name.replace("'", "''")
    found = [*client.search_experiments(filter_string=f"name = '{quoted}'"),
             *client.search_experiments(filter_string=f"name LIKE '%/{quoted}'", max_results=1000)]
    unique = {e.experiment_id: e for e in found if e.name == name or e.name.endswith(f"/{name}")}
    return sorted(unique.values(), key=lambda e: e.name)


def redact(text: str) -> str:
    """`text` with the user name and password of every URL in it removed (http://alice:secret@host/ ->
    http://host/): what a run, a log or a printed line may say of a store."""
    return CREDENTIALS.sub(r"\1", text)


def is_account(uri: str, name: str) -> bool | None:
    """Whether `name` is an account of the server at `uri`; None where this client may not ask (not an admin)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    try:
        AuthServiceClient(uri).get_user(name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        if err.error_code == "PERMISSION_DENIED" or err.get_http_status_code() in (401, 403):
            return None
        raise
    return True


def let_read(uri: str, user: str, experiment_id: str) -> None:
    """Give `user` READ on the experiment (e.g. a student on the experiment of their graded runs)."""
    from mlflow.server.auth.client import AuthServiceClient

    AuthServiceClient(uri).grant_user_permission(user, "experiment", experiment_id, "READ")


def experiment_by_name(client, name: str, patience_s: float = 10.0):
    """The experiment named `name`, or None. MLflow grants an experiment's creator MANAGE only after creating it
    (an after-request hook), so for a moment another process of that account is refused one it may read (two
    jobs of a sweep starting together): a refusal is asked again for `patience_s`, then said in one sentence."""
    import time

    from mlflow.exceptions import MlflowException

    deadline = time.monotonic() + patience_s
    while True:
        try:
            return client.get_experiment_by_name(name)
        except MlflowException as err:
            if err.error_code != "PERMISSION_DENIED":
                raise
            if time.monotonic() >= deadline:
                raise MlflowException(
                    f"The experiment '{name}' exists on {redact(client.tracking_uri)} but this account may not "
                    "read it: log to another experiment name, or ask its owner or a teacher for access.",
                    error_code="PERMISSION_DENIED") from None
        time.sleep(0.2)
