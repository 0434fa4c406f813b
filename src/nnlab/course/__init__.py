"""The online course's exercises in the platform's four-function shape, and the tools around them.

The course's GPU trainer grades a `.py` file that defines `load_train(path)`, `create_model(input_shape)` and
`train_model(model, train_data, test_data, batch_size=None, epochs=..., steps_per_epoch=None,
validation_steps=None)` (plus `load_test(path)` for faces). nnlab ships one such script per exercise
(`exercises/exer_1.py` … `exer_5.py`, built on nnlab's loaders, pipeline and builders) and three commands:
`nnlab course init exer_N DEST` copies a script out, `nnlab course run SCRIPT DATA_PATH` grades any script the
platform's way with MLflow tracking (`grade.py`), `nnlab course prepare NAME DEST` writes nnlab's copy of a
dataset in the platform's layout (`prepare.py`). The bars and time limits: `labs.py`.

The faces script's functions stay importable from here (`nnlab.course.load_train`, ...), loaded on first use so
that `nnlab course init` and `prepare` need no Keras.
"""

FACES = ("load_train", "load_test", "create_model", "train_model", "load_split", "IMAGE_SIZE", "TEST_SHARE", "SEED")


def __getattr__(name: str):
    if name in FACES:
        from nnlab.course.exercises import exer_5

        return getattr(exer_5, name)
    raise AttributeError(f"module 'nnlab.course' has no attribute '{name}'")
