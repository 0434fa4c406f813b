"""Decoding in worker processes (nnlab.data.decode_pool) gives what decoding in one process gives.

`pool_min_files=1, processes=2` forces one worker beside the test's own process on these tiny folders, and the
small chunks make both decode some of the files."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from data_fixtures import corrupt, make_image_tree, make_split_tree

from nnlab.data import decode_pool, decoding, load_dataset
from nnlab.data.image_cache import cached_decode
from nnlab.data.decoding import decode_files

POOL = {"processes": 2, "pool_min_files": 1}
ONE = {"processes": 1}


def files_of(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(decode_pool, "MAX_CHUNK", 4)  # several chunks for each process, even on tiny folders


@pytest.fixture
def mixed(tmp_path):
    """JPEGs and PNGs in every colour mode and odd sizes, so converting, cropping and resizing all happen."""
    make_image_tree(tmp_path / "img" / "a", ["x"], 7, size=(40, 26), fmt="jpg", modes=("RGB", "L"))
    make_image_tree(tmp_path / "img" / "b", ["y"], 7, size=(13, 21), modes=("RGB", "L", "RGBA", "P"))
    return files_of(tmp_path / "img")


def started(monkeypatch) -> list:
    """Counts the worker processes started from now on."""
    calls = []
    real = decode_pool.Workers.__init__

    def counting(self, n):
        calls.append(n)
        real(self, n)
    monkeypatch.setattr(decode_pool.Workers, "__init__", counting)
    return calls


@pytest.mark.parametrize("color_mode, crop", [("rgb", False), ("grayscale", True), ("mask", False)])
def test_workers_decode_the_same_bytes_as_one_process(mixed, small_chunks, monkeypatch, color_mode, crop):
    workers = started(monkeypatch)
    alone = decode_files(mixed, (9, 11), color_mode, crop, **ONE)
    pooled = decode_files(mixed, (9, 11), color_mode, crop, **POOL)
    assert workers == [1]
    assert type(pooled.images) is np.ndarray and pooled.images.dtype == np.uint8  # in memory: no file left
    assert np.array_equal(pooled.images, alone.images) and pooled.good.tolist() == alone.good.tolist()
    assert pooled.bad == alone.bad  # masks: the colour photos are refused, for the same reason
    assert len(alone.good) == (len(mixed) if color_mode != "mask" else 6)  # masks: the grayscale and palette files


def test_the_cache_entry_is_written_by_the_workers_and_read_back_alike(mixed, small_chunks, tmp_path):
    alone = cached_decode(mixed, (9, 11), cache_dir=str(tmp_path / "one"), **ONE)
    pooled = cached_decode(mixed, (9, 11), cache_dir=str(tmp_path / "pool"), **POOL)
    assert isinstance(pooled.images, np.memmap)  # the entry itself, as a later run maps it
    assert np.array_equal(np.asarray(pooled.images), np.asarray(alone.images))
    (one_json,), (pool_json,) = (tmp_path / "one").glob("*.json"), (tmp_path / "pool").glob("*.json")
    assert one_json.name == pool_json.name and json.loads(one_json.read_text()) == json.loads(pool_json.read_text())
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == [pool_json.stem + ".json", pool_json.stem + ".npy"]
    again = cached_decode(mixed, (9, 11), cache_dir=str(tmp_path / "pool"), **POOL)  # a hit: nothing decoded
    assert np.array_equal(np.asarray(again.images), np.asarray(alone.images))


def test_unreadable_files_are_reported_by_the_workers_as_by_one_process(tmp_path, small_chunks):
    root = make_image_tree(tmp_path / "img", ["a", "b"], 6, size=(30, 30), fmt="jpg")
    for how, f in zip(["garbage", "truncated", "empty"], files_of(root)[1::4]):
        corrupt(f, how)
    alone = decode_files(files_of(root), (8, 8), **ONE)
    pooled = decode_files(files_of(root), (8, 8), **POOL)
    assert len(alone.bad) == 3 and pooled.bad == alone.bad  # the same files, the same reasons
    assert pooled.good.tolist() == alone.good.tolist() and np.array_equal(pooled.images, alone.images)
    cached = cached_decode(files_of(root), (8, 8), cache_dir=str(tmp_path / "cache"), **POOL)
    assert cached.bad == alone.bad and np.array_equal(np.asarray(cached.images), alone.images)
    assert [p.suffix for p in sorted((tmp_path / "cache").iterdir())] == [".json", ".npy"]  # no temporary file


def test_a_folder_loaded_through_the_workers_reports_problems_as_before(tmp_path, small_chunks, monkeypatch):
    root = make_split_tree(tmp_path / "f", ["cat", "dog"], 12, 3, fmt="jpg", size=(16, 16))
    broken = corrupt(root / "train" / "dog" / "0003.jpg")
    spec = {"name": "image_folder", "path": str(root), "image_size": [8, 8], "val_split": 0.0,
            "max_bad_fraction": 0.1, "cache_dir": None}
    alone = load_dataset(spec, seed=0)
    workers = started(monkeypatch)
    monkeypatch.setattr(decoding, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(decode_pool, "usable_cores", lambda: 2)
    pooled = load_dataset(spec, seed=0)
    assert workers == [1, 1]  # the training files and the test files
    assert pooled.info == alone.info and any(str(broken) in p for p in pooled.info["problems"])
    for split in ("train", "test"):
        assert all(np.array_equal(a, b) for a, b in zip(getattr(pooled, split), getattr(alone, split)))


def test_small_lists_and_one_process_decode_here_without_workers(mixed, monkeypatch):
    workers = started(monkeypatch)
    monkeypatch.setattr(decode_pool, "usable_cores", lambda: 8)
    decode_files(mixed, (8, 8))  # 14 files, far below POOL_MIN_FILES
    decode_files(mixed, (8, 8), pool_min_files=1, processes=1)
    monkeypatch.setattr(decode_pool, "usable_cores", lambda: 1)
    decode_files(mixed, (8, 8), pool_min_files=1)
    assert workers == []
    assert decode_pool.pool_workers(5000, None, decoding.POOL_MIN_FILES) == 0
    assert decode_pool.pool_workers(5000, 4, decoding.POOL_MIN_FILES) == 3  # this process is the fourth
    assert decode_pool.pool_workers(3, 8, 1) == 0  # never more processes than half the files


@pytest.mark.parametrize("how", ["no executable", "dies at start"])
def test_workers_that_cannot_run_leave_the_decoding_to_this_process(mixed, small_chunks, monkeypatch, caplog,
                                                                   tmp_path, how):
    alone = decode_files(mixed, (9, 11), **ONE)
    if how == "no executable":
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    else:
        monkeypatch.setattr(decode_pool, "BOOT", "import sys; sys.exit(3)")
    with caplog.at_level(logging.WARNING, logger="nnlab.data.decode_pool"):
        pooled = decode_files(mixed, (9, 11), **POOL)
        cached = cached_decode(mixed, (9, 11), cache_dir=str(tmp_path / "cache"), **POOL)
    assert how == "dies at start" or "cannot start a decoding process" in caplog.text  # a death may go unseen:
    # this process decodes the chunks of a worker that has not answered, and is done before it hears of it
    assert np.array_equal(pooled.images, alone.images) and np.array_equal(np.asarray(cached.images), alone.images)
    assert [p.suffix for p in sorted((tmp_path / "cache").iterdir())] == [".json", ".npy"]


def test_a_worker_imports_neither_scikit_learn_nor_a_keras_backend():
    probe = decode_pool.BOOT.replace("serve()", "print(sorted(m for m in ('sklearn', 'keras', 'tensorflow', "
                                                "'jax', 'torch') if m in sys.modules))")
    folder = str(decode_pool.Path(decode_pool.__file__).parent)
    out = subprocess.run([sys.executable, "-c", probe, json.dumps(sys.path), folder], capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_this_process_returns_when_the_workers_answer_the_last_chunks_while_it_decodes(mixed, monkeypatch):
    """A worker finishing the last chunks while this process decodes its own must end the wait (it once hung)."""
    import threading
    import time

    real = decode_pool.decode_chunk

    def slow_here(*args):  # only this process's chunks: the workers run the real one
        time.sleep(1.5)
        return real(*args)
    monkeypatch.setattr(decode_pool, "MAX_CHUNK", 5)  # 14 files: chunks 0 and 5 to the worker, 10 here
    monkeypatch.setattr(decode_pool, "decode_chunk", slow_here)
    result = []
    thread = threading.Thread(target=lambda: result.append(decode_files(mixed, (8, 8), **POOL)), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive() and result[0].good.tolist() == list(range(len(mixed)))
