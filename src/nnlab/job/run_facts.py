"""What a job logs about its data and its model beside the metrics: the data's sizes and what the loader
skipped, the model's summary and its architecture diagram. Shared by training runs, `nnlab evaluate` and the
course grader."""

from pathlib import Path


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
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), line_length=100)
    return "\n".join(lines)
