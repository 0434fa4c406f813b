"""Training images/s of the RetinaNet detector (nnlab's `retinanet` model) on random scene-sized batches, per
model variant, in float32 or mixed bfloat16: what chose `scenes_detector`'s settings.

    python benchmarks/detector_speed.py '[{}, {"head_convs": 0}]' [--size 128] [--batch 16] [--bfloat16]

Each variant: one warm-up epoch over 4 batches (it compiles), then two timed epochs of `fit` steps.
"""

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", help="a JSON list of model overrides, e.g. '[{}, {\"head_convs\": 0}]'")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--bfloat16", action="store_true", help="the mixed_bfloat16 policy")
    args = parser.parse_args()
    import keras

    from nnlab.models import build_model
    from nnlab.tasks import get_task
    from nnlab.tasks.detection import box_targets

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16" if args.bfloat16 else "float32")
    rng = np.random.default_rng(0)
    n, size = args.batch * 4, args.size
    x = rng.uniform(0, 255, (n, size, size, 3)).astype(np.float32)
    y = np.full((n, 12, 5), -1, np.float32)
    for i in range(n):  # six digit-sized boxes an image
        for j in range(6):
            x0, y0 = rng.integers(0, size - 30, 2)
            side = rng.integers(16, 28)
            y[i, j] = [x0, y0, x0 + 0.6 * side, y0 + side, j % 10]
    task = get_task("detection")
    for variant in json.loads(args.variants):
        model = build_model({"name": "retinanet", **variant}, (size, size, 3), "detection", 10)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), **task.compile_args(None, None, None, 10))
        model.fit(x, box_targets(y), batch_size=args.batch, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(x, box_targets(y), batch_size=args.batch, epochs=2, verbose=0)
        seconds = time.perf_counter() - start
        print(f"{json.dumps(variant)} {keras.mixed_precision.dtype_policy().name}: {model.count_params():,} "
              f"parameters, {2 * n / seconds:.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
