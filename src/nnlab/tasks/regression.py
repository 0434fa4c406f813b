"""Regression: one linear unit, MSE by default (or any of the usual error losses), MAE and RMSE; the test set
is also scored in the target's own units and against the loader's naive baselines, and plotted."""

import numpy as np

from nnlab.tasks import TASKS, Task


@TASKS.register("regression")
class Regression(Task):
    name = "regression"
    headline = "test_mae"
    objective = ("best_val_loss", "test_loss")
    epoch_metrics = ("loss", "mae", "rmse")
    test_columns = ("test_loss", "test_mae", "test_rmse", "test_mae_original", "test_rmse_original")
    losses = ("mean_squared_error", "mean_absolute_error", "huber", "log_cosh", "mean_absolute_percentage_error",
              "mean_squared_logarithmic_error", "poisson")

    def head(self, x, num_classes: int):
        import keras

        return keras.layers.Dense(1, dtype="float32", name="head")(x)

    def head_units(self, num_classes: int) -> int:
        return 1

    def default_loss(self, num_classes: int) -> str:
        return "mean_squared_error"

    def default_metrics(self, num_classes: int) -> list[str]:
        return ["mae", "rmse"]

    def augmentation(self, augment, seed: int):
        """Keras layers stay in the model; albumentations' transforms change the images alone (the target, an age
        say, stays), in the pipeline."""
        from nnlab.data.augment import pipeline_augmentation

        return pipeline_augmentation(augment, masks=False) if augment.library == "albumentations" else (augment, None)

    def evaluate(self, model, data, predictions, batch_size: int) -> dict[str, float]:
        """Errors in the target's own units, the loader's baselines (e.g. seasonal naive) on the same rows, and
        for an ensemble its members' errors alone (what averaging gained)."""
        from nnlab.layers import members
        from nnlab.metrics import regression_errors

        y_test = data.test[1]
        metrics: dict[str, float] = {}
        for name, guess in {"": predictions, **data.baselines}.items():
            metrics |= regression_errors(guess, y_test, data.target_scale, suffix=f"_{name}" if name else "")
        if len(members(model)) > 1:
            alone = [regression_errors(m.predict(data.test[0], batch_size=batch_size, verbose=0), y_test,
                                       data.target_scale, suffix="_members") for m in members(model)]
            metrics |= {k: float(np.mean([a[k] for a in alone])) for k in alone[0]}
        return metrics

    def log_results(self, sink, data, predictions, title: str) -> dict[str, float]:
        from nnlab import plots

        scale = data.target_scale or (0.0, 1.0)
        truth, guess = (np.asarray(v, np.float64).reshape(-1) * scale[1] + scale[0]
                        for v in (data.test[1], predictions))
        fig = plots.predicted_vs_true(truth, guess, f"{title}: test set")
        sink.figure(fig, "predictions.png")
        plots.close(fig)
        return {}

    def describe_predictions(self, predictions, class_names, target_scale=None, *, baseline=None, out=None,
                             names=None) -> list[dict]:
        """The predicted value in the target's own units (target_scale applied; plus `baseline` where the model
        forecasts a change, e.g. the airline series differenced)."""
        offset, scale = target_scale or (0.0, 1.0)
        values = np.asarray(predictions, np.float64).reshape(len(predictions), -1)[:, 0] * scale + offset
        if baseline is not None:
            values = values + np.asarray(baseline, np.float64)
        return [{"value": float(v), "_title": f"{v:.4g}"} for v in values]
