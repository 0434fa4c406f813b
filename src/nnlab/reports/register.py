"""`nnlab report --register NAME`: the best run's MLflow Model as a new version in the Model Registry."""

import math
from contextlib import contextmanager

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from nnlab.errors import NnlabError
from nnlab.reports.report import Report
from nnlab.tracking.logged_model import MODEL_NAME, model_name


def register_best(client: MlflowClient, report: Report, name: str) -> str:
    """Register the MLflow Model of the report's first row (its best run, by the report's sort; of a search, the
    first trial neither pruned nor failed) in the Model Registry as a new version of `name` (created if missing);
    returns the sentence saying which version."""
    from mlflow.exceptions import MlflowException

    if not report.run_ids:
        raise NnlabError(f"The report of '{report.title}' has no runs, so there is no model to register.")
    from nnlab.reports.search import NOT_BEST, trial_state

    runs = [client.get_run(run_id) for run_id in report.run_ids]
    # A search's pruned or failed trial is never its best, whatever its partial score.
    run = next((r for r in runs if trial_state(r) not in NOT_BEST), runs[0])
    label = f"run '{run.info.run_name or run.info.run_id}' ({run.info.run_id})"
    model_id = logged_model_id(client, run)
    if model_id is None:
        raise NnlabError(f"The best run of '{report.title}', {label}, has no logged MLflow model (trained with "
                         "trainer.save_model=false, or before nnlab logged models), so nothing was registered.")
    try:
        try:
            client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        with global_tracking_uri(client.tracking_uri):  # MLflow's registry looks the model up there
            version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run.info.run_id,
                                                  model_id=model_id)
    except MlflowException as err:
        raise NnlabError(f"Cannot register the model of {label} as '{name}': {err.message}") from err
    score = report.table[report.metric].iloc[0] if report.metric in report.table else None
    shown = f"; {report.metric} {score:.4g}" if isinstance(score, (int, float)) and not math.isnan(score) else ""
    who = f"run '{run.info.run_name or run.info.run_id}' ({run.info.run_id}{shown})"
    return (f"nnlab: registered the model of {who} as '{name}' version {version.version} "
            f"(models:/{name}/{version.version})")


@contextmanager
def global_tracking_uri(uri: str):
    """MLflow 3.17's SQL registry resolves a `models:/<id>` source with a new MlflowClient(), i.e. the global
    tracking URI, not the one of the client registering it (a TODO in its code): point it at `uri` meanwhile."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def logged_model_id(client: MlflowClient, run: Run) -> str | None:
    """The id of the run's MLflow Model: named after its model (the run's `model` tag), or MODEL_NAME as runs
    logged before were (the latest, where it was logged more than once, e.g. by a resumed run), or None."""
    from mlflow.entities import LoggedModelStatus
    from mlflow.exceptions import MlflowException

    names = {model_name(run.data.tags.get("model")), MODEL_NAME}
    found = []
    for output in run.outputs.model_outputs if run.outputs is not None else []:
        try:
            model = client.get_logged_model(output.model_id)
        except MlflowException:  # deleted since
            continue
        if model.name in names and model.status == LoggedModelStatus.READY:
            found.append((output.step, model.creation_timestamp, model.model_id))
    return max(found)[2] if found else None
