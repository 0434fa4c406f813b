"""Time to accuracy: nnlab presets trained as `python -m nnlab +experiment=NAME` trains them, with the test set
scored after every epoch (here only: a run never looks at its test set while training), so the curve of test
accuracy against training time shows when each lab bar is reached. No MLflow: it runs wherever Keras runs (the
GPU machines have JAX and PyTorch, not TensorFlow), and reports images/s.

Usage: python benchmarks/time_to_accuracy.py PRESET[,override,...] ... [--mixed both|on|off] [--bars 0.87 0.925]
       [--out results.json]      (NNLAB_DATA_DIR: the datasets' folder)
e.g.   python benchmarks/time_to_accuracy.py fashion_cnn_adam fashion_cnn_fast --bars 0.87 0.925
"""

import argparse
import json
import sys
import time
from dataclasses import replace

import keras


class TestEachEpoch(keras.callbacks.Callback):
    """Scores the test set at each epoch end; its own time is left out of the training time it records."""

    def __init__(self, x, y, batch_size: int):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.curve: list[tuple[float, float]] = []  # (training seconds so far, test accuracy)
        self.excluded = 0.0

    def on_train_begin(self, logs=None):
        if not self.curve:
            self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        scores = self.model.evaluate(self.x, self.y, batch_size=self.batch_size, verbose=0, return_dict=True)
        self.curve.append((now - self.start - self.excluded, float(scores.get("accuracy", scores.get("acc", 0)))))
        self.excluded += time.perf_counter() - now


def compose(name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        return OmegaConf.to_object(hydra_compose(config_name="config", overrides=[f"+experiment={name}",
                                                                                   *overrides]))


def run_preset(spec: str, mixed: bool) -> dict:
    from nnlab.data import load_dataset
    from nnlab.job.app import build
    from nnlab.tasks import get_task
    from nnlab.training import runtime, train

    name, *overrides = spec.split(",")
    cfg = compose(name, overrides)
    trainer = replace(cfg.trainer, mixed_precision=mixed, checkpoint=False, verbose=2)
    facts = runtime.setup_runtime(cfg.seed, mixed, trainer.threads)
    data = load_dataset(cfg.dataset, seed=cfg.seed)
    image_only, transform = get_task(data.task).augmentation(cfg.augment, cfg.seed)
    model = build(cfg.model, data, image_only, cfg.seed)
    scorer = TestEachEpoch(*data.test, trainer.batch_size)
    result = train.train(model, data, trainer, cfg.optimizer, callbacks=[scorer], seed=cfg.seed, transform=transform)
    seconds = scorer.curve[-1][0]
    return {"preset": spec, "mixed_precision": facts["mixed_precision_effective"], "device": facts["device"],
            "backend": facts["backend"], "epochs_run": result.epochs_run, "stopped_by": result.stopped_by,
            "training_seconds": round(seconds, 1), "images_per_second": round(len(data.train[0]) * result.epochs_run
                                                                               / seconds, 1),
            "final_test_accuracy": scorer.curve[-1][1], "curve": [(round(t, 1), round(a, 4)) for t, a in scorer.curve],
            "params": model.count_params()}


def time_to(curve: list, bar: float) -> float | None:
    return next((t for t, accuracy in curve if accuracy >= bar), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("presets", nargs="+")
    parser.add_argument("--mixed", choices=("off", "on", "both"), default="off")
    parser.add_argument("--bars", type=float, nargs="*", default=[0.87])
    parser.add_argument("--out")
    args = parser.parse_args()
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.mixed]
    results = []
    for spec in args.presets:
        for mixed in modes:
            row = run_preset(spec, mixed)
            row["seconds_to"] = {f"{bar:g}": time_to(row["curve"], bar) for bar in args.bars}
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
            if args.out:
                with open(args.out, "w") as file:
                    json.dump(results, file, indent=1)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
