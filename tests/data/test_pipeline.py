import keras
import numpy as np

from nnlab.data.pipeline import ArrayBatches, batches


def epoch(ds):
    xs, ys = zip(*[(np.asarray(x), np.asarray(y)) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_tf_batches_shuffle_every_epoch_and_cover_every_example():
    assert keras.backend.backend() == "tensorflow"
    x = np.arange(50, dtype=np.uint8)[:, None]
    ds = batches(x, np.arange(50), 8, shuffle=True, seed=1)
    first, second = epoch(ds), epoch(ds)
    assert sorted(first[1].tolist()) == list(range(50)) and sorted(second[1].tolist()) == list(range(50))
    assert first[1].tolist() != second[1].tolist()  # reshuffled
    assert np.array_equal(first[0][:, 0], first[1])  # pixels travel with their labels
    assert first[0].dtype == np.uint8  # the model rescales: four times less to move per batch


def test_unshuffled_batches_keep_the_order():
    x, y = np.arange(20, dtype=np.float32)[:, None], np.arange(20)
    assert epoch(batches(x, y, 6, shuffle=False))[1].tolist() == list(range(20))
    assert epoch(ArrayBatches(x, y, 6, shuffle=False))[1].tolist() == list(range(20))


def test_threads_bound_the_input_pipeline_pool():
    x, y = np.arange(20, dtype=np.float32)[:, None], np.arange(20)
    ds = batches(x, y, 6, shuffle=False, threads=1)
    assert ds.options().threading.private_threadpool_size == 1 and ds.options().autotune.cpu_budget == 1
    assert epoch(ds)[1].tolist() == list(range(20))
    assert batches(x, y, 6, shuffle=False).options().threading.private_threadpool_size is None
    assert ArrayBatches(x, y, 6, shuffle=False, workers=1).workers == 1


def test_array_batches_serve_memory_mapped_arrays_and_reshuffle(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(30, dtype=np.uint8).reshape(30, 1, 1, 1))
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    ds = ArrayBatches(x, np.arange(30), 7, shuffle=True, seed=0)
    assert len(ds) == 5
    first = [ds[i] for i in range(len(ds))]
    ds.on_epoch_end()
    second = [ds[i] for i in range(len(ds))]
    labels = np.concatenate([y for _, y in first])
    assert sorted(labels.tolist()) == list(range(30))
    assert all(np.array_equal(xb.reshape(-1), yb) for xb, yb in first)
    assert labels.tolist() != np.concatenate([y for _, y in second]).tolist()


def test_tf_batches_gather_from_the_arrays_without_copying_them_into_the_graph(tmp_path):
    assert keras.backend.backend() == "tensorflow"
    np.save(tmp_path / "x.npy", np.arange(4000 * 32 * 32 * 3, dtype=np.uint32).astype(np.uint8).reshape(4000, 32, 32, 3))
    x = np.load(tmp_path / "x.npy", mmap_mode="r")  # 12 MB, as the image cache hands it over
    y = {"boxes": np.arange(4000, dtype=np.float32)[:, None], "labels": np.arange(4000, dtype=np.int32)}
    ds = batches(x, y, 100, shuffle=True, seed=0)
    assert len(ds._as_serialized_graph().numpy()) < 100_000  # from_tensors would embed all 12 MB
    xb, yb = next(iter(ds))
    assert xb.dtype == np.uint8 and tuple(xb.shape) == (100, 32, 32, 3) and set(yb) == {"boxes", "labels"}
    rows = yb["labels"].numpy()
    assert np.array_equal(xb.numpy(), x[rows]) and np.array_equal(yb["boxes"].numpy()[:, 0], rows)
