"""A job that SLURM runs: its job id on its run, a requeued job resumed into its own run, and a launching process
that follows its jobs on a cluster that keeps no accounting.

SLURM requeues a job that is preempted, timed out (submitit's USR2 handler requeues it) or requeued by hand
(`scontrol requeue`): the same job id starts again, from the start of its script, with SLURM_RESTART_COUNT
counting the restarts. The first start's run was ended KILLED by the SIGTERM (or FAILED by submitit's exit);
each epoch left a checkpoint in the job's folder on the shared filesystem. So a restarted job looks up the run
its earlier start made (same sweep parent, same `slurm_job_id` tag) and continues it with `nnlab resume`'s
machinery: one run per job, FINISHED at the end, every epoch logged once.
"""

import functools
import logging
import os
import subprocess
from typing import Any

from nnlab.errors import NnlabError

log = logging.getLogger(__name__)

SLURM_TAG = "slurm_job_id"  # as squeue shows it: "<array job>_<task>" for a sweep's array task
RESTARTS_TAG = "slurm_restarts"


def job_id() -> str | None:
    """This process's SLURM job, as squeue and `scontrol requeue` name it; None outside SLURM."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    if env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def restarts() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def job_tags() -> dict[str, Any]:
    """Tags of a run trained by a SLURM job: its id, node and log file; nothing outside SLURM."""
    job = job_id()
    if job is None:
        return {}
    tags = {SLURM_TAG: job, "slurm_node": os.environ.get("SLURMD_NODENAME"), RESTARTS_TAG: restarts()}
    if "SUBMITIT_EXECUTOR" in os.environ:  # a sweep's job: submitit keeps its stdout/stderr beside the sweep
        try:
            import submitit

            tags["slurm_log"] = str(submitit.JobEnvironment().paths.stdout)
        except Exception as err:  # noqa: BLE001  (a courtesy tag, never the reason a job fails)
            log.debug("no submitit log path: %s", err)
    return tags


def requeued_run(uri: str, experiment: str, parent_run_id: str | None) -> str | None:
    """The run an earlier start of this requeued SLURM job left unfinished, if it can be resumed (it has a
    checkpoint); None for a first start, a job outside SLURM, or a run to start afresh."""
    from nnlab.job.resume import resumable
    from nnlab.tracking import store
    from nnlab.tracking.accounts import experiment_by_name, own_experiment
    from nnlab.training.checkpoints import load_checkpoint

    job = job_id()
    if job is None or restarts() == 0:
        return None
    client = store.client(uri)
    found = experiment_by_name(client, own_experiment(client.tracking_uri, experiment))
    if found is None:
        return None
    query = f"tags.`{SLURM_TAG}` = '{job}'"
    if parent_run_id:
        query += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
    runs = client.search_runs([found.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    if not runs or runs[0].info.status == "FINISHED":
        return None
    try:
        folder = resumable(runs[0])
    except NnlabError as err:
        log.warning("SLURM job %s was requeued but %s Training starts again as a new run.", job, err)
        return None
    return runs[0].info.run_id if load_checkpoint(folder) is not None else None


def job_failure(err: Exception) -> NnlabError:
    """One sentence for submitit's error about a job (its message holds the job's whole log): which job, what
    happened to it, and where its log is."""
    import re

    text = str(err)
    logs = re.findall(r"\S+_log\.err", text)
    where = f"; its log: {logs[0]}" if logs else ""
    lost = re.search(r"Job (\S+) \(task: (\d+)\) with path (\S+)\s+has not produced any output \(state: ([^)]*)\)", text)
    if lost:
        job, task, result, state = lost.groups()
        log_file = f"{result.rsplit('/', 1)[0]}/{job}_{task}_log.err"
        return NnlabError(f"SLURM job {job} ended ({state}) before its sweep job finished (cancelled, killed or out "
                          f"of memory); its log: {log_file}")
    trace = text.split("with trace:", 1)[-1].split("You can check full logs", 1)[0]
    last = [line.strip() for line in trace.splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    return NnlabError(f"a SLURM job of the sweep failed: {last[-1] if last else type(err).__name__}{where}")


def accounting_on() -> bool:
    """Whether the cluster keeps accounting (sacct answers); asked once, of `scontrol show config`."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return True  # leave submitit as it is: its own sacct calls will say what is wrong
    line = next((x for x in out.splitlines() if x.startswith("AccountingStorageType")), "")
    return bool(line) and not line.rstrip().endswith("accounting_storage/none")


def follow_without_accounting() -> None:
    """On a cluster without accounting, submitit's sacct calls fail (a warning and sacct's own error line at every
    poll, and a job that dies without a result file is waited for for ever): follow jobs with squeue instead."""
    from submitit.slurm.slurm import SlurmJob

    watcher = squeue_watcher()
    if not isinstance(SlurmJob.watcher, watcher) and not accounting_on():
        SlurmJob.watcher = watcher(delay_s=600)  # a class attribute: this launching process's jobs
        log.info("this cluster keeps no accounting: following the jobs with squeue")


@functools.cache
def squeue_watcher() -> type:
    """submitit's watcher class, asking squeue (built on first use: submitit is imported only by its jobs)."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueWatcher(SlurmInfoWatcher):
        """sacct's place on a cluster without accounting: squeue lists this user's jobs that slurmctld still
        holds; a job it no longer lists has ended (its result file, or its absence, says how)."""

        def _make_command(self) -> list[str] | None:
            if not self._registered - self._finished:
                return None
            return ["squeue", "--noheader", "--array", "--states=all", "--user", str(os.getuid()),
                    "--format=%i|%T|%N"]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            info = {}
            for line in text.splitlines():
                job, state, nodes = (line.split("|") + ["", ""])[:3]
                info[job.strip()] = {"JobID": job.strip(), "State": state.strip(), "NodeList": nodes.strip()}
            for job in self._registered - self._finished:
                info.setdefault(job, {"JobID": job, "State": "ENDED", "NodeList": ""})
            return info

    return SqueueWatcher

