"""Issue 27's measurements: a sweep on the one-node SLURM cluster (`make slurm`) beside the same sweep with joblib,
and a requeued job's run.

    python benchmarks/cluster_sweep.py [--jobs 8] [--legs sweep requeue]

- sweep: an 8-job digits MLP sweep (model.width=16..128, 5 epochs), once with hydra/launcher=slurm (1 CPU a job:
  the node's cores run that many jobs at once) and once with hydra/launcher=joblib (as many workers as cores):
  wall time of the command, runs FINISHED, and the per-job overhead of SLURM (its wall time minus joblib's,
  divided by the jobs; the jobs' own training seconds are reported too).
- requeue: a one-job sweep (30 epochs) requeued with `scontrol requeue` after epoch 3 and released at once: the
  epoch it resumed from, the run's status, and how many points each epoch has.
No dataset (digits are bundled); needs the cluster up (`make slurm`, root)."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

JOB = ["trainer.verbose=0", "trainer.plot_model=false", "trainer.save_model=false", "trainer.max_minutes=null"]


def sweep(folder: Path, launcher: list[str], jobs: int, extra: list[str] = (), wait: bool = True):
    widths = ",".join(str(16 * (i + 1)) for i in range(jobs))
    args = [sys.executable, "-m", "nnlab", "-m", *launcher, *JOB, f"model.width={widths}" if jobs > 1 else "",
            f"tracking.uri=sqlite:///{folder}/mlflow.db", "tracking.experiment=bench", f"hydra.sweep.dir={folder}/sweep",
            *extra]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([a for a in args if a], cwd=folder, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    return process if not wait else (process, process.communicate()[1])


def children(folder: Path):
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("bench").experiment_id])
    return client, [r for r in runs if r.data.tags.get("nnlab.role") == "job"]


def sweep_leg(jobs: int, root: Path) -> dict:
    out = {}
    cores = os.cpu_count() or 1
    for name, launcher in (("slurm", ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
                                      "hydra.launcher.mem_gb=1"]),
                           ("joblib", ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={cores}"])):
        folder = root / name
        folder.mkdir()
        start = time.monotonic()
        process, err = sweep(folder, launcher, jobs, ["trainer.epochs=5"])
        wall = time.monotonic() - start
        _, runs = children(folder)
        out[name] = {"exit": process.returncode, "wall_s": round(wall, 1),
                     "finished": sum(r.info.status == "FINISHED" for r in runs), "jobs": len(runs),
                     "training_s_median": sorted(r.data.metrics.get("training_seconds", 0) for r in runs)[len(runs) // 2]
                     if runs else None, "stderr_tail": err[-300:] if process.returncode else ""}
    out["slurm_overhead_s_per_job"] = round((out["slurm"]["wall_s"] - out["joblib"]["wall_s"]) / jobs, 2)
    return out


def requeue_leg(root: Path) -> dict:
    folder = root / "requeue"
    folder.mkdir()
    process = sweep(folder, ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"], 1,
                    ["trainer.epochs=30", "trainer.batch_size=16", "model.width=256", "model.depth=3"], wait=False)
    latest = folder / "sweep" / "0" / "checkpoint" / "latest"
    while process.poll() is None and not (latest.is_file() and int(latest.read_text().split("-")[-1]) >= 3):
        time.sleep(0.3)
    job = subprocess.run(["squeue", "-h", "--array", "-t", "RUNNING", "-o", "%i"], capture_output=True,
                         text=True, check=True).stdout.split()[0]
    before = int(latest.read_text().split("-")[-1])
    subprocess.run(["scontrol", "requeue", job], check=True)
    while "PENDING" not in subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                                          text=True, check=False).stdout:
        time.sleep(0.3)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True)
    process.communicate()
    client, runs = children(folder)
    steps = [m.step for r in runs for m in client.get_metric_history(r.info.run_id, "loss")]
    return {"exit": process.returncode, "runs": len(runs), "status": [r.info.status for r in runs],
            "epochs_checkpointed_when_requeued": before,
            "resumed_from_epoch": [r.data.tags.get("nnlab.resumed_from_epoch") for r in runs],
            "points": len(steps), "distinct_epochs": len(set(steps))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--legs", nargs="+", default=["sweep", "requeue"], choices=["sweep", "requeue"])
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="nnlab-cluster-bench-") as tmp:
        if "sweep" in args.legs:
            results["sweep"] = sweep_leg(args.jobs, Path(tmp))
        if "requeue" in args.legs:
            results["requeue"] = requeue_leg(Path(tmp))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
