"""Issue 26's measurements: a class on one tracking server (`nnlab server`), beside the SQLite store.

    python benchmarks/class_server.py [--students 30] [--legs single class outage]

- single: the same 3-epoch digits job, alternately against a SQLite store and the server (as a student), 3 times
  each; median wall time of the whole command, and the ratio.
- class: N students (processes, each its own account) training the digits job at once against the server, then N
  processes at once against one SQLite store: runs FINISHED, metric points present, and the median seconds per
  epoch that a job waited on tracking (its `logging_seconds` metric: every hand-over of a record, figure or file,
  the model's logging excluded, over the epochs; on the server that is the outbox's enqueue).
- outage: a 30-epoch digits CNN (batch 8) against the server, with the server stopped for 60 s from its 10th
  second, beside the same job with no outage: status, points per step, training seconds, wall time.
Needs PostgreSQL (apt install postgresql) and `pip install -e .[server]`; no dataset (digits are bundled)."""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from nnlab.server import service, users

JOB = ["trainer.verbose=0", "trainer.plot_model=false", "trainer.checkpoint=false"]


def job(args: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nnlab", *JOB, *args], cwd=cwd, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def timed(args: list[str], env: dict, cwd: Path) -> float:
    start = time.monotonic()
    process = job(args, env, cwd)
    _, err = process.communicate()
    assert process.returncode == 0, err[-2000:]
    return time.monotonic() - start


def last_runs(client: MlflowClient, experiment: str, n: int):
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"], max_results=n)


def single(server, folder: Path, work: Path) -> dict:
    student = server["students"][0]
    sqlite = f"sqlite:///{work}/single.db"
    timed([f"tracking.uri={sqlite}", "trainer.epochs=1"], {}, work)  # the store exists, as for a returning user
    walls = {"sqlite": [], "server": []}
    for _ in range(3):
        walls["sqlite"].append(timed([f"tracking.uri={sqlite}", "trainer.epochs=3"], {}, work))
        walls["server"].append(timed([f"tracking.uri={server['url']}", "trainer.epochs=3"], server["env"](student),
                                     work))
    med = {k: statistics.median(v) for k, v in walls.items()}
    return {"walls_s": walls, "median_s": med, "ratio": med["server"] / med["sqlite"]}


def crowd(uri: str, envs: list[dict], work: Path, epochs: int) -> dict:
    start = time.monotonic()
    processes = [job([f"tracking.uri={uri}", f"trainer.epochs={epochs}", "tracking.experiment=class"], env, work)
                 for env in envs]
    codes = [p.wait() for p in processes]
    wall = time.monotonic() - start
    failed = [p.stderr.read()[-500:] for p, c in zip(processes, codes) if c]
    return {"wall_s": wall, "exit_codes": codes, "failed": failed[:3]}


def class_leg(server, work: Path, epochs: int = 5) -> dict:
    out = {}
    envs = [server["env"](s) for s in server["students"]]
    out["server"] = crowd(server["url"], envs, work, epochs)
    totals = {"finished": 0, "points_complete": 0, "logging_s_per_epoch": []}
    for student in server["students"]:
        client = MlflowClient(server["url"])
        os.environ.update(server["env"](student))
        (run,) = last_runs(client, f"{student}/class", 1)
        totals["finished"] += run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        totals["points_complete"] += sorted(steps) == list(range(1, epochs + 1))
        totals["logging_s_per_epoch"].append(run.data.metrics.get("logging_seconds", float("nan")) / epochs)
    out["server_runs"] = {**totals, "logging_s_per_epoch": statistics.median(totals["logging_s_per_epoch"])}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        os.environ.pop(key, None)
    sqlite = f"sqlite:///{work}/class.db"
    timed([f"tracking.uri={sqlite}", "trainer.epochs=1", "tracking.experiment=class"], {}, work)
    out["sqlite"] = crowd(sqlite, [{}] * len(envs), work, epochs)
    client = MlflowClient(sqlite)
    runs = last_runs(client, "class", len(envs))
    out["sqlite_runs"] = {
        "finished": sum(r.info.status == "FINISHED" for r in runs),
        "points_complete": sum(sorted(m.step for m in client.get_metric_history(r.info.run_id, "loss"))
                               == list(range(1, epochs + 1)) for r in runs),
        "logging_s_per_epoch": statistics.median(r.data.metrics.get("logging_seconds", float("nan")) / epochs
                                                 for r in runs)}
    return out


def outage(server, folder: Path, work: Path) -> dict:
    student = server["students"][0]
    env = {**server["env"](student), "NNLAB_OUTBOX_DIR": str(work / "outbox")}
    args = [f"tracking.uri={server['url']}", "model=cnn", "trainer.epochs=30", "trainer.batch_size=8",
            "tracking.experiment=outage"]
    legs = {}
    for leg in ("no_outage", "outage_60s"):
        start = time.monotonic()
        process = job(args, env, work)
        if leg == "outage_60s":
            time.sleep(10)
            service.stop(folder)
            down = time.monotonic()
            time.sleep(60 - (time.monotonic() - down) + 0)
            service.start(folder, port=server["port"], workers=server["workers"])
            legs["server_down_s"] = time.monotonic() - down
        _, err = process.communicate()
        wall = time.monotonic() - start
        os.environ.update(server["env"](student))
        client = MlflowClient(server["url"])
        (run,) = last_runs(client, f"{student}/outage", 1)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        legs[leg] = {"exit": process.returncode, "status": run.info.status, "points": len(steps),
                     "steps_once": sorted(steps) == list(range(1, 31)), "wall_s": wall,
                     "training_s": run.data.metrics.get("training_seconds"), "stderr_tail": err[-400:]}
    return legs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--legs", nargs="+", default=["single", "class", "outage"])
    parser.add_argument("--out", default="bench-results/class_server.json")
    args = parser.parse_args()
    parent = Path(tempfile.mkdtemp(prefix="nnlab-bench-server-"))
    os.chmod(parent, 0o711)
    folder, work = parent / "server", parent / "work"
    work.mkdir()
    port = service.free_port()
    state = service.start(folder, port=port, workers=args.workers)
    students = [f"student{i:02d}" for i in range(args.students)]
    passwords = {s: users.add_user(folder, s) for s in students}
    server = {"url": state.url, "port": port, "workers": args.workers, "students": students,
              "env": lambda s: {"MLFLOW_TRACKING_USERNAME": s, "MLFLOW_TRACKING_PASSWORD": passwords[s]}}
    results = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
               "workers": args.workers}
    try:
        for leg in args.legs:
            results[leg] = {"single": single, "class": class_leg, "outage": outage}[leg](
                server, *((folder, work) if leg != "class" else (work,)))
            print(json.dumps({leg: results[leg]}, indent=1, default=str), flush=True)
    finally:
        service.stop(folder)
        shutil.rmtree(parent, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
