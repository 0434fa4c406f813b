"""The decoded-image cache: OpenCV's threads in place of worker processes, and large entries written behind."""

import numpy as np
import pytest
from data_fixtures import corrupt, make_image_tree

from nnlab.data import decode_pool, image_cache, opencv_decode
from nnlab.data.image_cache import cached_decode


def files_of(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def no_workers(monkeypatch):
    """Fails the test if a worker process is started."""
    def refuse(self, n):
        raise AssertionError(f"started {n} decoding processes for files that OpenCV decodes")
    monkeypatch.setattr(decode_pool.Workers, "__init__", refuse)


@pytest.mark.skipif(not opencv_decode.available(), reason="opencv-python-headless is not installed")
def test_opencv_files_decode_in_threads_with_pillows_pixels_and_no_worker_processes(tmp_path, monkeypatch,
                                                                                    no_workers):
    root = make_image_tree(tmp_path / "img", ["a", "b"], 9, size=(12, 10), fmt="jpg", modes=("RGB", "L"))
    corrupt(files_of(root)[3])
    files = files_of(root)
    fast = cached_decode(files, (10, 12), "rgb", False, str(tmp_path / "cache"), processes=2, pool_min_files=1)
    with monkeypatch.context() as m:
        m.setattr(opencv_decode, "cv2", None)
        slow = cached_decode(files, (10, 12), "rgb", False, None, processes=1)
    assert np.array_equal(fast.images, slow.images) and fast.good.tolist() == slow.good.tolist()
    assert [f for f, _ in fast.bad] == [str(files[3])] and fast.bad == slow.bad  # Pillow names the reason
    again = cached_decode(files, (10, 12), "rgb", False, str(tmp_path / "cache"))
    assert isinstance(again.images, np.memmap) and np.array_equal(again.images, fast.images)


@pytest.mark.parametrize("decoder", ["opencv", "pillow"])
def test_a_large_entry_is_written_behind_and_waited_for_by_the_next_lookup(tmp_path, monkeypatch, decoder):
    if decoder == "pillow":
        monkeypatch.setattr(opencv_decode, "cv2", None)
    elif not opencv_decode.available():
        pytest.skip("opencv-python-headless is not installed")
    monkeypatch.setattr(image_cache, "WRITE_BEHIND_BYTES", 0)  # every entry counts as large
    written = []
    real = image_cache.finish

    def recording(nbytes, array_path, write, *args):
        def write_and_record(*a):
            written.append("started")
            write(*a)
            written.append("done")
        real(nbytes, array_path, write_and_record, *args)
    monkeypatch.setattr(image_cache, "finish", recording)
    files = files_of(make_image_tree(tmp_path / "img", ["a"], 6, size=(8, 8)))
    cache = tmp_path / "cache"
    first = cached_decode(files, (8, 8), "rgb", False, str(cache), processes=1)
    assert type(first.images) is np.ndarray  # training starts on the array in memory
    (thread,) = image_cache.PENDING.values()
    assert not thread.daemon  # the interpreter waits for it at exit: an entry is whole or absent
    second = cached_decode(files, (8, 8), "rgb", False, str(cache), processes=1)
    assert written == ["started", "done"] and not image_cache.PENDING
    assert isinstance(second.images, np.memmap) and np.array_equal(second.images, first.images)
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]  # no temporary file left


@pytest.mark.skipif(not opencv_decode.available(), reason="opencv-python-headless is not installed")
def test_a_failed_row_write_leaves_no_entry_and_no_temporary_file(tmp_path, monkeypatch, caplog):
    def full_disk(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(image_cache.os, "pwrite", full_disk)
    files = files_of(make_image_tree(tmp_path / "img", ["a"], 6, size=(8, 8)))
    decoded = cached_decode(files, (8, 8), "rgb", False, str(tmp_path / "cache"), processes=2)
    assert decoded.images.shape == (6, 8, 8, 3) and decoded.bad == []  # the run goes on with its pixels
    assert list((tmp_path / "cache").iterdir()) == []
    assert "no space left" in caplog.text.lower()  # the reason is named
