"""The job: one configured experiment from composed config to a finished MLflow run. `app` is the Hydra task
(a new run, or `tracking.resume`), `body` loads, builds, trains, evaluates and logs into a run, `resume` reopens
an interrupted run, `sweep` gives a multirun its parent run; `run_facts` and `netron_view` are what a run logs
about its data and model. This is the one place where data, models, training and tracking meet."""
