"""Issue 28's measurement: the same Optuna search over a Fashion-MNIST MLP (learning rate, widths, dropout: the
`fashion_optuna` preset, TPE with seed 42) with each pruner named (`--pruners`; default none, then median).

    NNLAB_DATA_DIR=../shared/datasets python benchmarks/search_pruning.py [--trials 20] [--limit 12000] [--seed 42]

For each: the trials' total training seconds (their `training_seconds` metric), how many were pruned, the best
COMPLETE trial's validation accuracy (at its best epoch: the search's objective), and the wall time. `--limit`
trains on that many images (the test set stays whole) to fit a 2-core machine; 0 means all 60,000."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient


def search(folder: Path, pruner: str, trials: int, limit: int, seed: int) -> dict:
    args = [sys.executable, "-m", "nnlab", "sweep", "fashion_optuna", f"hydra.sweeper.pruner={pruner}",
            f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.sampler.seed={seed}",
            f"tracking.uri=sqlite:///{folder}/mlflow.db",
            f"hydra.sweep.dir={folder}/sweep", "trainer.plot_model=false", "trainer.save_model=false",
            "trainer.verbose=0", *([f"dataset.limit={limit}"] if limit else [])]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    if "NNLAB_DATA_DIR" in env:  # the search runs in its own folder: a relative data root must not move with it
        env["NNLAB_DATA_DIR"] = os.path.abspath(env["NNLAB_DATA_DIR"])
    start = time.monotonic()
    done = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("fashion_optuna").experiment_id])
    jobs = [r for r in runs if r.data.tags.get("nnlab.role") == "job"]
    complete = [r for r in jobs if r.data.tags.get("optuna.state") == "COMPLETE"]
    best = max(complete, key=lambda r: r.data.metrics.get("best_val_accuracy", 0), default=None)
    return {"exit": done.returncode, "wall_s": round(wall, 1), "trials": len(jobs),
            "pruned": sum(r.data.tags.get("optuna.state") == "PRUNED" for r in jobs),
            "epochs": sum(int(r.data.metrics.get("epochs_run", 0)) for r in jobs),
            "training_s": round(sum(r.data.metrics.get("training_seconds", 0) for r in jobs), 1),
            "best_val_accuracy": round(best.data.metrics["best_val_accuracy"], 4) if best else None,
            "best_test_accuracy": round(best.data.metrics.get("test_accuracy", 0), 4) if best else None,
            "stderr_tail": done.stderr[-500:] if done.returncode else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--limit", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=42, help="the TPE sampler's seed (the preset's: 42)")
    parser.add_argument("--pruners", nargs="+", default=["none", "median"],
                        help="compared with the first: names, or Optuna's class with arguments as a Hydra dict, "
                             "'{_target_:optuna.pruners.PercentilePruner,percentile:25.0}'")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="nnlab-search-bench-") as tmp:
        for number, pruner in enumerate(args.pruners):
            folder = Path(tmp) / f"search{number}"  # a pruner may be a YAML dict: {_target_:optuna.pruners...}
            folder.mkdir()
            results[pruner] = search(folder, pruner, args.trials, args.limit, args.seed)
            print(pruner, json.dumps(results[pruner]), flush=True)
    base = results[args.pruners[0]]["training_s"]
    for pruner in args.pruners[1:]:
        results[f"training_ratio_{pruner}"] = round(results[pruner]["training_s"] / max(base, 1e-9), 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
