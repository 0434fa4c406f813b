"""Sweeps on a real one-node SLURM cluster (cluster/slurm.sh, as `make slurm` starts it): one SLURM job per sweep
job, a requeued job resumed into its own run, a job killed on the cluster failing the sweep instead of hanging."""

import os
import subprocess
import sys
import time

import pytest
from job.test_sweep import TINY, runs_by_role

from nnlab.job.slurm import RESTARTS_TAG, SLURM_TAG
from nnlab.training.callbacks import load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]
# One CPU and 1 GB a job: the preset's 2 CPUs and 4 GB would run one job at a time on a 2-core CI machine.
SMALL = ("hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1")
LONG = ("trainer.epochs=30", "trainer.batch_size=16", "model.width=256", "model.depth=3", "trainer.verbose=0",
        "trainer.plot_model=false", "trainer.save_model=false")


def squeue(*fields: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "--noheader", "--array", f"--format={'|'.join(fields)}"], capture_output=True,
                         text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def started_sweep(tmp_path, store, experiment, *args):
    """A sweep launched in the background, as a user's terminal runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")}
    return subprocess.Popen([sys.executable, "-m", "nnlab", "-m", *SMALL, *args, f"tracking.uri={store}",
                             f"tracking.experiment={experiment}", f"hydra.sweep.dir={tmp_path}/sweep"],
                            cwd=tmp_path, env=env | {"TF_CPP_MIN_LOG_LEVEL": "3"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_epoch(tmp_path, epoch: int, sweep, timeout: float = 300) -> str:
    """The SLURM job id once the sweep's only job has checkpointed `epoch`."""
    deadline = time.time() + timeout
    while time.time() < deadline and sweep.poll() is None:
        latest = list(tmp_path.glob("sweep/0/checkpoint/latest"))
        state = load_checkpoint(latest[0].parent) if latest else None
        if state is not None and state[0]["epoch"] >= epoch:
            (job,) = [j for j, state in squeue("%i", "%T") if state == "RUNNING"]
            return job
        time.sleep(0.3)
    sweep.kill()
    pytest.fail(f"the job never reached epoch {epoch}: {sweep.communicate()[1][-3000:]}")


def test_a_sweep_on_slurm_runs_a_job_each_tags_every_run_with_its_job_and_logs_no_sacct_noise(cli, tmp_path, store):
    result = cli("-m", *SMALL, "model.width=16,24", "dataset.limit=300", *TINY, f"tracking.uri={store}",
                 "tracking.experiment=slurm", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _, parents, jobs = runs_by_role(store, "slurm")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(j.info.status for j in jobs) == ["FINISHED", "FINISHED"]
    ids = {j.data.tags[SLURM_TAG] for j in jobs}
    assert len(ids) == 2 and all("_" in i for i in ids)  # array tasks: "<array job>_<task>"
    assert all(os.path.isfile(j.data.tags["slurm_log"]) for j in jobs)
    noise = result.stdout + result.stderr  # accounting is off on this cluster: no warning at every poll
    assert "Bypassing sacct" not in noise and "accounting storage is disabled" not in noise


def test_a_requeued_job_resumes_its_run_and_logs_every_epoch_once(tmp_path, store):
    sweep = started_sweep(tmp_path, store, "requeue", *LONG)
    job = wait_for_epoch(tmp_path, 3, sweep)
    subprocess.run(["scontrol", "requeue", job], check=True)
    # SLURM holds a requeued job for two minutes before it may start again; release it once it is pending.
    deadline = time.time() + 120
    while time.time() < deadline and [s for j, s in squeue("%i", "%T") if j == job] != ["PENDING"]:
        time.sleep(0.3)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True)
    _, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    client, parents, jobs = runs_by_role(store, "requeue")
    assert [p.info.status for p in parents] == ["FINISHED"] and len(jobs) == 1, [j.info.status for j in jobs]
    run = jobs[0]
    assert run.info.status == "FINISHED" and run.data.tags[SLURM_TAG] == job and run.data.tags[RESTARTS_TAG] == "1"
    assert int(run.data.tags["nnlab.resumed_from_epoch"]) >= 3
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(1, 31))


def test_a_job_killed_on_the_cluster_fails_the_sweep_instead_of_leaving_it_waiting(tmp_path, store):
    """Without accounting submitit cannot see a job that ended without its result file; nnlab asks squeue. SIGKILL
    (out of memory, a node lost) leaves no result file; a plain `scancel`'s SIGTERM may let a job finish within
    SLURM's KillWait."""
    sweep = started_sweep(tmp_path, store, "cancel", *LONG)
    job = wait_for_epoch(tmp_path, 1, sweep)
    subprocess.run(["scancel", "--signal=KILL", "--full", job], check=True)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode != 0
    (line,) = [x for x in err.splitlines() if x.startswith("nnlab: error:")]
    assert line.startswith(f"nnlab: error: SLURM job {job} ended (") and "_log.err" in line, err[-3000:]
    _, parents, jobs = runs_by_role(store, "cancel")
    assert [p.info.status for p in parents] == ["FAILED"] and [j.info.status for j in jobs] == ["KILLED"]


def test_a_job_that_fails_by_itself_is_not_requeued_and_the_sweep_says_why_in_one_sentence(cli, tmp_path, store):
    result = cli("-m", *SMALL, "model.param_budget=10", "dataset.limit=300", *TINY, f"tracking.uri={store}",
                 "tracking.experiment=bad", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode != 0
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("nnlab: error:")]
    assert "param_budget=10 cannot be met" in line, result.stderr[-3000:]  # the job's own sentence
    _, parents, jobs = runs_by_role(store, "bad")
    assert [p.info.status for p in parents] == ["FAILED"]
    assert [(j.info.status, j.data.tags[RESTARTS_TAG]) for j in jobs] == [("FAILED", "0")]


def test_a_slurm_sweep_logs_to_the_team_server_as_the_student_who_launched_it(tracking_server, tmp_path,
                                                                             monkeypatch):
    """Several machines, one store: the jobs get the student's sign-in through sbatch's exported environment."""
    from mlflow.tracking import MlflowClient

    env = tracking_server.env("alice") | {"NNLAB_OUTBOX_DIR": str(tmp_path / "outbox")}
    result = subprocess.run([sys.executable, "-m", "nnlab", "-m", *SMALL, "model.width=16,24", "dataset.limit=300",
                             *TINY, "tracking.experiment=cluster", f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path,
                            env={**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    tracking_server.sign_in(monkeypatch, "alice")
    client = MlflowClient(tracking_server.url)
    found = client.get_experiment_by_name("alice/cluster")
    runs = client.search_runs([found.experiment_id])
    jobs = [r for r in runs if r.data.tags.get("nnlab.role") == "job"]
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
    assert len({j.data.tags[SLURM_TAG] for j in jobs}) == 2 and all(j.data.tags["nnlab.account"] == "alice" for j in jobs)
