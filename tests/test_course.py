"""The course-style faces script: the four functions a grader imports, on a generated labels.csv + final_files/."""

import numpy as np

from data_fixtures import make_faces
from nnlab import course


def test_course_functions_load_build_and_train(tmp_path, monkeypatch):
    monkeypatch.setenv("NNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(course, "IMAGE_SIZE", (24, 24))
    root = make_faces(tmp_path / "faces", n=40)
    train_data, test_data = course.load_train(str(root), batch_size=8), course.load_test(str(root), batch_size=8)
    x, y = next(iter(train_data))
    assert tuple(x.shape)[1:] == (24, 24, 3) and "uint8" in str(x.dtype)  # raw pixels; the model scales
    test_ages = np.concatenate([np.asarray(b[1]) for b in test_data])
    assert len(test_ages) == 10  # the course's 25% test share of 40
    model = course.create_model((24, 24, 3))
    assert model.output_shape == (None, 1) and model.loss.name == "huber_loss"
    trained = course.train_model(model, train_data, test_data, batch_size=None, epochs=2)
    assert trained is model and len(model.history.history["val_mae"]) == 2
    assert np.isfinite(model.predict(test_data, verbose=0)).all()
