"""Grade a course script on a machine without MLflow or TensorFlow (the GPU machines: JAX and PyTorch only).

Does what `nnlab course run` does, minus tracking: `load_train(path)`, `load_test(path)`, `input_shape` from the
first training batch, `train_model(create_model(input_shape), train, test)`, then the test score from the model's
predictions: accuracy for a classifier, MAE for a one-output regression (exercise 5). Prints one RESULT line.

    KERAS_BACKEND=torch PYTHONPATH=src python benchmarks/course_on_gpu.py src/nnlab/course/exercises/exer_5.py DATA/
"""

import importlib.util
import sys
import time

import numpy as np


def main(script: str, path: str) -> None:
    start = time.time()
    spec = importlib.util.spec_from_file_location("course_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import keras

    path = path.rstrip("/") + "/"  # the platform passes the folder with a trailing slash
    train, test = module.load_train(path), module.load_test(path)
    first = train[0] if hasattr(train, "__getitem__") else next(iter(train))
    print(f"backend {keras.backend.backend()}, input {tuple(first[0].shape)}, loaded in {time.time() - start:.1f} s")
    model = module.train_model(module.create_model(tuple(first[0].shape[1:])), train, test)
    truth, found = [], []
    for xb, yb in (test[i] for i in range(len(test))) if hasattr(test, "__getitem__") else test:
        found.append(np.asarray(model.predict_on_batch(xb)))
        truth.append(np.asarray(yb))
    y, p = np.concatenate(truth), np.concatenate(found)
    last = getattr(model.layers[-1], "activation", None)
    if p.shape[-1] == 1 and getattr(last, "__name__", "") == "linear":  # one linear output: a regression
        score = f"test MAE {float(np.mean(np.abs(p.reshape(-1) - y.reshape(-1)))):.3f}"
    else:
        labels = y.argmax(-1) if y.ndim > 1 else y.reshape(-1)
        picked = p.argmax(-1) if p.shape[-1] > 1 else (p.reshape(-1) > 0.5).astype(int)
        score = f"test accuracy {float(np.mean(picked == labels)):.4f}"
    print(f"RESULT {score} on {len(y)} examples; {(time.time() - start) / 60:.1f} min from load_train to the score")


if __name__ == "__main__":
    main(*sys.argv[1:3])
