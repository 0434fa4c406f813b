"""What a job logs about its data and its model beside the metrics: the data's sizes and what the loader
skipped, the model's summary and its architecture diagram. Shared by training runs, `nnlab evaluate` and the
course grader."""

import os
from contextlib import contextmanager
from pathlib import Path

SUMMARY_WIDTH = 150  # characters a line of model_summary.txt: room for every column of Keras's summary


def log_architecture(run, model) -> None:
    """The architecture diagram (keras.utils.plot_model); where Graphviz is missing, a tag says so instead."""
    import tempfile

    from nnlab import plots

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "architecture.png"
        missing = plots.architecture(model, path)
        if missing:
            run.tags({"architecture_diagram": f"skipped: {missing}"})
        else:
            run.file(path)


def log_data_facts(run, data) -> None:
    """Sizes, shape and what the loader skipped (counts as params, the file list as data_problems.txt)."""
    facts = {f"{k}_size": v for k, v in data.sizes().items()} | {"input_shape": data.input_shape}
    facts |= {k: v for k, v in data.info.items() if k != "problems"}
    run.params({f"data.{k}": v for k, v in facts.items()})
    if data.info.get("problems"):
        run.text("\n".join(data.info["problems"]) + "\n", "data_problems.txt")


def summary(model) -> str:
    """Keras's summary with every column (Layer, Output Shape, Param #, Connected to, Trainable) and the layers of
    nested models. Keras draws it with rich, which cuts each line at its console's width: 80 where the output is
    no terminal (a job's log, a notebook: 115), whatever `line_length` says; so the console is told the width."""
    lines: list[str] = []
    with console_width(SUMMARY_WIDTH):
        model.summary(print_fn=lambda text, *args, **kwargs: lines.append(text), line_length=SUMMARY_WIDTH,
                      expand_nested=True, show_trainable=True)
    return "\n".join(line.rstrip() for text in lines for line in text.splitlines()) + "\n"


@contextmanager
def console_width(columns: int):
    """rich's console width for the duration: COLUMNS, and JUPYTER_COLUMNS (what rich reads in a notebook)."""
    saved = {k: os.environ.get(k) for k in ("COLUMNS", "JUPYTER_COLUMNS")}
    os.environ.update(dict.fromkeys(saved, str(columns)))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
