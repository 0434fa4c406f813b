"""`make bench`: the issue's measurements on the real datasets (not in CI; minutes to an hour).

  cfg       seconds for `python -m nnlab --cfg job` (target <= 1.5 s)
  overhead  nnlab wall time / plain Keras wall time, same model, data and epochs (target <= 1.03)
  images    first and later epochs of nnlab's image-folder pipeline (decoding in worker processes, and in one
            process), ImageDataGenerator.flow_from_directory and keras.utils.image_dataset_from_directory, each
            measurement in a new process, rounds interleaved (targets vs flow_from_directory: >= 1.5x on the
            first epoch, >= 5x on later ones), on fruits-360-more and cifar-10-images
  catalogue boston_mlp (test MAE <= 2.2), notmnist_cnn (>= 95%), cifar10_cnn (>= 72%)
  fashion   fashion_mlp and fashion_cnn_adam: test accuracy and wall time (targets 89.5% / 93.5%)
  archs     mnist_cnn (>= 99.4%), fashion_alexnet and its wide/deep variants, airline_lstm (vs seasonal naive)
  photos    fruits_cnn (>= 99.5% in 10 min), fruits_resnet (>= 99.8% in 30 min), faces_age (MAE <= 7 in 60 min)
  transfer  hotdog_pretrain (pretrains and exports a backbone), hotdog_offline loading it, the same network
            from scratch: transfer must beat scratch
  segment   scenes_unet (test mean IoU >= 0.90 on held-out scenes within 15 min; offline, needs no data)
  detect    scenes_detector (test mAP@0.5 >= 0.8 within 30 min; offline), then nnlab detect on canvases of 10 and
            100 held-out digits: found / present, precision
  augment   images/s of training-time augmentation, Keras layers vs albumentations (flip + rotation + shift
            on generated 64x64 RGB batches; needs no data)
  budget    fashion_cnn_adam on an idle machine and beside a second training job: test accuracies within 0.3
            points (the schedule follows the 20-minute budget); `budget:idle` or `budget:loaded` runs one leg
  sweep     wall time of a 4-job sweep with the joblib launcher / the same sweep run serially (target <= 0.6
            on 2 cores): fashion_neurons and boston_variants as users run them, and a 3-epoch Fashion sweep;
            `sweep:NAME` runs one of them

Usage: python benchmarks/run.py [cfg overhead images augment catalogue fashion archs photos transfer segment detect sweep] [--epochs N]; needs NNLAB_DATA_DIR (the Makefile
points it at ../shared/datasets). Results: bench-results/results.json and printed Markdown.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from augment_libraries import bench_augment  # noqa: E402
from image_pipeline import bench_images  # noqa: E402

OUT = HERE.parent / "bench-results"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
if "NNLAB_DATA_DIR" in ENV:  # jobs run in folders of their own: a relative data root must not move with them
    ENV["NNLAB_DATA_DIR"] = os.path.abspath(ENV["NNLAB_DATA_DIR"])


def timed(cmd: list[str], cwd: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout


def nnlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "nnlab", *args]


def last_run(store: str, experiment: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    return {"run_id": run.info.run_id, "status": run.info.status, **run.data.metrics,
            "stopped_by": run.data.tags.get("stopped_by"), "description": run.data.tags.get("mlflow.note.content")}


def create_store(store: str) -> float:
    from mlflow.tracking import MlflowClient

    start = time.perf_counter()
    MlflowClient(store).search_experiments()
    return time.perf_counter() - start


def bench_cfg(work: str) -> dict:
    timed(nnlab("--cfg", "job"), work)  # warm the file cache
    times = [timed(nnlab("+experiment=fashion_cnn_adam", "--cfg", "job"), work)[0] for _ in range(5)]
    return {"cfg_job_seconds_median": statistics.median(times), "cfg_job_seconds_all": times}


def bench_overhead(work: str, epochs: int) -> dict:
    data = os.path.join(os.environ["NNLAB_DATA_DIR"], "fashion-mnist")
    plain, out = timed([sys.executable, str(HERE / "plain_keras.py"), data, str(epochs)], work)
    store = f"sqlite:///{work}/overhead.db"
    init_seconds = create_store(store)  # a user's store exists after their first run; its creation is reported apart
    runner, _ = timed(nnlab("+experiment=fashion_mlp", f"trainer.epochs={epochs}", f"tracking.uri={store}",
                            "tracking.experiment=overhead"), work)
    run = last_run(store, "overhead")
    return {"epochs": epochs, "store_creation_seconds": init_seconds, "plain_seconds": plain, "nnlab_seconds": runner, "ratio": runner / plain,
            "plain_output": out.strip().splitlines()[-1], "nnlab_test_accuracy": run["test_accuracy"]}


KEEP = ("test_accuracy", "test_mae", "test_loss", "test_rmse_original", "test_rmse_original_naive",
        "test_rmse_original_seasonal_naive", "test_mean_iou", "test_dice", "test_pixel_accuracy", "test_map50",
        "test_map", "params", "training_seconds", "epochs_run", "stopped_by", "description", "status", "run_id", "lr")


def bench_experiments(work: str, names: tuple[str | tuple[str, ...], ...]) -> dict:
    """Each experiment as a user runs it (an entry may add overrides); the headline metric, time and how it
    stopped. Jobs share the working folder, so one can load what an earlier one exported."""
    results = {}
    store = f"sqlite:///{work}/experiments.db"
    for entry in names:
        name, *extra = (entry,) if isinstance(entry, str) else entry
        seconds, _ = timed(nnlab(f"+experiment={name}", *extra, f"tracking.uri={store}",
                                 f"tracking.experiment={name}"), work)
        run = last_run(store, name)
        results[name] = {"wall_seconds": seconds, **{k: run[k] for k in KEEP if k in run}}
    return results


def bench_detect(work: str) -> dict:
    """scenes_detector (test mAP@0.5 >= 0.8 within 30 min), then `nnlab detect` on new canvases of 10 and 100
    held-out digits: found / present and precision at IoU 0.5 (the lab's "find 10 objects, 100 objects")."""
    results = bench_experiments(work, ("scenes_detector",))
    store, run_id = f"sqlite:///{work}/experiments.db", results["scenes_detector"]["run_id"]
    for items, side in ((10, 128), (100, 352)):
        out = Path(work) / f"scene{items}"
        seconds, _ = timed(nnlab("detect", run_id, "--scene", str(items), "--size", str(side), str(side), "--top",
                                 str(items + 20), "--min-score", "0.5", "--uri", store, "--out", str(out)), work)
        found = json.loads((out / "detections.json").read_text())
        results[f"scene{items}"] = {k: found.get(k) for k in ("present", "found", "precision")} | {
            "kept": len(found["detections"]), "seconds": round(seconds, 1)}
    return results


def bench_budget(work: str, legs: tuple[str, ...] = ("idle", "loaded"), extra: tuple[str, ...] = ()) -> dict:
    """fashion_cnn_adam as a new user runs it (20-minute budget, cosine schedule fitted to the budget), on an
    idle machine and with a second training job beside it (fashion_mlp, for as long as the first one runs).
    Target: test accuracies within 0.3 points of each other. `extra`: overrides for both legs (--overrides)."""
    results = {}
    for leg in legs:
        beside = None
        if leg == "loaded":
            beside = subprocess.Popen(nnlab("+experiment=fashion_mlp", "trainer.epochs=1000", "trainer.max_minutes=60",
                                            f"tracking.uri=sqlite:///{work}/beside.db", "tracking.experiment=beside"),
                                      cwd=work, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(20)  # let it get past its imports and data loading, into training
        try:
            run = bench_experiments(work, (("fashion_cnn_adam", f"tracking.run_name={leg}", *extra),))["fashion_cnn_adam"]
        finally:
            if beside is not None:
                beside.kill()
                beside.wait()
        results[leg] = run
    if len(results) == 2:
        results["accuracy_gap_points"] = 100 * abs(results["idle"]["test_accuracy"] - results["loaded"]["test_accuracy"])
    return results


# 4-job sweeps from the labs. "fashion" and "boston" are presets as a user runs them (four of their values):
# Fashion-MNIST MLPs at batch 128, 15 epochs (each job keeps both cores busy in its matrix products) and Boston
# loss variants at batch 8, 300 epochs (each step mostly per-batch dispatch on one core). "fashion_short" is the
# same Fashion sweep at 3 epochs: jobs of ~15 s, where the fixed costs around training dominate.
SWEEPS = {
    "fashion": ("+sweep=fashion_neurons", "model.width=64,128,256,512", "trainer.plot_model=false"),
    "boston": ("+sweep=boston_variants", "model.widths=[256,128]", "trainer.plot_model=false"),
    "fashion_short": ("+sweep=fashion_neurons", "model.width=64,128,256,512", "trainer.epochs=3",
                      "trainer.plot_model=false"),
}


def bench_sweep(work: str, n_jobs: int = 2, names: tuple[str, ...] = tuple(SWEEPS)) -> dict:
    """Each 4-job sweep in-process with every core, then in `n_jobs` joblib workers sharing the cores; the
    ratio is joblib time / serial time. The jobs' own wall and training times (from their runs) split each
    total into training, per-job costs (data, evaluation, figures, model files, logging) and per-process costs
    (imports, Hydra, the sweep's report)."""
    results = {}
    for name in names:
        row = {"n_jobs": n_jobs}
        for launcher in ("serial", "joblib"):
            store = f"sqlite:///{work}/sweep_{name}_{launcher}.db"
            # joblib jobs set trainer.threads (cores / jobs at once) by themselves, as a user's would
            extra = ("hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}") if launcher == "joblib" else ()
            row[f"{launcher}_seconds"], _ = timed(nnlab("--multirun", *SWEEPS[name], *extra, f"tracking.uri={store}",
                                                        "tracking.experiment=bench",
                                                        f"hydra.sweep.dir={work}/{name}_{launcher}"), work)
            jobs = sweep_jobs(store, "bench")
            row[f"{launcher}_training_seconds"] = sum(j["training"] for j in jobs)  # summed over jobs
            row[f"{launcher}_job_seconds"] = sum(j["wall"] for j in jobs)
            row[f"{launcher}_test_accuracy"] = [j.get("test_accuracy") for j in jobs]
        row["ratio"] = row["joblib_seconds"] / row["serial_seconds"]
        results[name] = row
    return results


def sweep_jobs(store: str, experiment: str) -> list[dict]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`nnlab.role` = 'job'")
    return [{"training": r.data.metrics["training_seconds"], "wall": (r.info.end_time - r.info.start_time) / 1000,
             "test_accuracy": r.data.metrics.get("test_accuracy")} for r in runs]


SUITES = {
    "fashion": ("fashion_mlp", "fashion_cnn_adam"),
    "catalogue": ("boston_mlp", "notmnist_cnn", "cifar10_cnn"),
    "archs": ("mnist_cnn", "fashion_alexnet", "fashion_alexnet_wide", "fashion_alexnet_deep", "airline_lstm"),
    "photos": ("fruits_cnn", "fruits_resnet", "faces_age"),
    "segment": ("scenes_unet",),
    "transfer": ("hotdog_pretrain", "hotdog_offline",
                 ("hotdog_scratch", "dataset.image_size=[32,32]", "model.resize=[64,64]")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", default=["cfg", "overhead", "images", "catalogue", "fashion"])
    parser.add_argument("--epochs", type=int, default=20, help="epochs for the overhead comparison")
    parser.add_argument("--overrides", nargs="*", default=[], help="budget: overrides for both legs")
    args = parser.parse_args()
    if "NNLAB_DATA_DIR" not in os.environ:
        sys.exit("bench: set NNLAB_DATA_DIR to the folder holding fashion-mnist/ (e.g. ../shared/datasets).")
    OUT.mkdir(exist_ok=True)
    results_file = OUT / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    with tempfile.TemporaryDirectory() as work:
        for which in args.which:
            print(f"bench: {which} ...", flush=True)
            if which in SUITES:
                result = bench_experiments(work, SUITES[which])
            elif which == "images":
                result = bench_images(os.environ["NNLAB_DATA_DIR"])
            elif which == "augment":
                result = bench_augment()
            elif which.startswith("budget"):  # budget, budget:idle or budget:loaded
                legs = tuple(which.split(":", 1)[1].split(",")) if ":" in which else ("idle", "loaded")
                result = bench_budget(work, legs, tuple(args.overrides))
            elif which.startswith("sweep:"):  # one of the sweeps, e.g. sweep:boston
                result = bench_sweep(work, names=tuple(which.split(":", 1)[1].split(",")))
            else:
                result = {"cfg": lambda: bench_cfg(work), "overhead": lambda: bench_overhead(work, args.epochs),
                          "sweep": lambda: bench_sweep(work), "detect": lambda: bench_detect(work)}[which]()
            results[which] = {**result, "when": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count()}
            results_file.write_text(json.dumps(results, indent=2))
            print(json.dumps({which: results[which]}, indent=2), flush=True)


if __name__ == "__main__":
    main()
