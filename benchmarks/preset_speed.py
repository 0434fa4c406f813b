"""Training images/s of an image-classification preset's model on generated images of its dataset's shape, in
float32 or mixed bfloat16: does a faster policy or batch size buy a budget-bound preset more epochs?

    python benchmarks/preset_speed.py fashion_cnn_adam [--shape 28 28 1] [--classes 10] [--batch 128] [--bfloat16]

One warm-up fit of 5 batches (it compiles), then one timed epoch of 60 batches.
"""

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", help="an experiment preset with a classification model, e.g. fashion_cnn_adam")
    parser.add_argument("--shape", type=int, nargs="+", default=[28, 28, 1])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--bfloat16", action="store_true", help="the mixed_bfloat16 policy")
    args = parser.parse_args()
    import keras
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from nnlab.models import build_model

    policy = "mixed_bfloat16" if args.bfloat16 else "float32"
    keras.mixed_precision.set_dtype_policy(policy)
    with initialize_config_module("nnlab.conf", version_base=None):
        cfg = compose("config", overrides=[f"+experiment={args.preset}"])
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True), tuple(args.shape), "classification",
                        args.classes)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((args.batch * 60, *args.shape), dtype=np.float32)
    y = rng.integers(0, args.classes, len(x))
    model.fit(x[:args.batch * 5], y[:args.batch * 5], batch_size=args.batch, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0)
    print(f"{args.preset} {policy} batch {args.batch}: {len(x) / (time.perf_counter() - start):.0f} img/s")


if __name__ == "__main__":
    main()
