"""Classification: softmax over the classes (one sigmoid unit for two), cross-entropy, accuracy; the test set
gets a confusion matrix and a per-class precision / recall / F1 report (scikit-learn)."""

import numpy as np

from nnlab.tasks import TASKS, Task, log_json


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    categorical = True
    headline = "test_accuracy"
    objective = ("best_val_accuracy", "test_accuracy")
    epoch_metrics = ("loss", "accuracy")
    test_columns = ("test_loss", "test_accuracy", "test_f1_macro")
    losses = ("sparse_categorical_crossentropy", "binary_crossentropy", "categorical_focal_crossentropy",
              "binary_focal_crossentropy", "categorical_hinge")

    def head(self, x, num_classes: int):
        import keras

        # float32 output keeps the softmax and the loss stable under mixed precision.
        if num_classes > 2:
            return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="head")(x)
        return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="head")(x)

    def head_units(self, num_classes: int) -> int:
        return num_classes if num_classes > 2 else 1

    def default_loss(self, num_classes: int) -> str:
        return "sparse_categorical_crossentropy" if num_classes > 2 else "binary_crossentropy"

    def default_metrics(self, num_classes: int) -> list[str]:
        return ["accuracy"]

    def augmentation(self, augment, seed: int):
        """Keras layers stay in the model; albumentations' transforms change the images alone, in the pipeline."""
        from nnlab.data.augment import pipeline_augmentation

        return pipeline_augmentation(augment, masks=False) if augment.library == "albumentations" else (augment, None)

    def log_results(self, sink, data, predictions, title: str) -> dict[str, float]:
        from nnlab import plots
        from nnlab.metrics import class_report

        report = class_report(data.test[1], predictions, data.class_names)
        sink.text(report.text, "classification_report.txt")
        log_json(sink, report.table, "classification_report.json")
        fig = plots.confusion_figure(report.y_true, report.y_pred, report.labels, report.class_names,
                                     f"Confusion matrix: {title} (test set)")
        sink.figure(fig, "confusion_matrix.png")
        plots.close(fig)
        return report.metrics()

    def describe_predictions(self, predictions, class_names, target_scale=None, *, baseline=None, out=None,
                             names=None) -> list[dict]:
        """The predicted class (name and index, as the test report counts it: P > 0.5 for one sigmoid unit) and
        its probability; the three likeliest classes with theirs when there are more than two."""
        p = np.asarray(predictions, np.float64).reshape(len(predictions), -1)
        if p.shape[1] == 1:  # one sigmoid unit: P(class 1)
            p = np.concatenate([1 - p, p], axis=1)
        labels = list(class_names) if class_names else [str(k) for k in range(p.shape[1])]
        rows = []
        for probs in p:
            order = np.argsort(-probs, kind="stable")
            k = int(order[0])
            row = {"class": labels[k], "class_index": k, "probability": round(float(probs[k]), 6)}
            if len(labels) > 2:
                row["top3"] = "; ".join(f"{labels[j]} ({probs[j]:.3f})" for j in order[:3])
            rows.append(row | {"_title": f"{labels[k]} ({probs[k]:.2f})"})
        return rows
