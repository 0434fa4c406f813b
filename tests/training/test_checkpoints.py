"""Checkpoints that survive damage and a full disk, and one owner per checkpoint folder
(nnlab.training.checkpoints)."""

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import keras
import pytest
from small_disk import fill, small_disk
from tests_support import compiled, tiny_data

from nnlab import files
from nnlab.errors import NnlabError
from nnlab.files import NoSpaceError
from nnlab.training import checkpoints
from nnlab.training.checkpoints import (
    OWNER,
    RunOwnedError,
    claim,
    load_checkpoint,
    restore_weights,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]


def state(epoch: int) -> dict:
    return {"epoch": epoch, "stage": 0, "result": {"history": {"loss": [1.0] * epoch}}, "budget": {}}


def built():
    model = compiled(tiny_data())
    model.optimizer.build(model.trainable_variables)  # as after a first batch: its slots are in the checkpoint
    return model


@pytest.fixture
def model():
    return built()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".partial"))


def test_the_last_two_checkpoints_are_kept_each_with_its_weights_checksum(tmp_path, model):
    for epoch in range(1, 5):
        save_checkpoint(tmp_path, model, state(epoch))
    assert sorted(p.name for p in tmp_path.glob("epoch-*")) == ["epoch-00003", "epoch-00004"]
    assert (tmp_path / "latest").read_text() == "epoch-00004"
    saved = json.loads((tmp_path / "epoch-00004" / "state.json").read_text())
    weights = tmp_path / "epoch-00004" / "weights.weights.h5"
    assert saved["weights_bytes"] == weights.stat().st_size
    assert saved["weights_sha256"] == checkpoints.file_digest(weights)
    found, path = load_checkpoint(tmp_path)
    assert found["epoch"] == 4 and path == weights and "fallback" not in found
    assert leftovers(tmp_path) == []


def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one_naming_the_file(tmp_path, model, caplog):
    for epoch in (1, 2):
        save_checkpoint(tmp_path, model, state(epoch))
    damaged = tmp_path / "epoch-00002" / "weights.weights.h5"
    os.truncate(damaged, damaged.stat().st_size // 2)
    with caplog.at_level("WARNING", logger="nnlab.training.checkpoints"):
        found, weights = load_checkpoint(tmp_path)
    assert found["epoch"] == 1 and weights == tmp_path / "epoch-00001" / "weights.weights.h5"
    assert str(damaged) in caplog.text and "epoch-00001" in caplog.text
    assert str(damaged) in found["fallback"]
    restore_weights(built(), weights)  # the one fallen back to loads


def test_a_broken_state_json_falls_back_instead_of_saying_there_is_no_checkpoint(tmp_path, model):
    for epoch in (1, 2):
        save_checkpoint(tmp_path, model, state(epoch))
    (tmp_path / "epoch-00002" / "state.json").write_text('{"epoch": 2, "res')
    found, _ = load_checkpoint(tmp_path)
    assert found["epoch"] == 1 and "epoch-00002/state.json is damaged (not valid JSON)" in found["fallback"]


def test_a_changed_byte_is_caught_by_the_checksum(tmp_path, model):
    for epoch in (1, 2):
        save_checkpoint(tmp_path, model, state(epoch))
    weights = tmp_path / "epoch-00002" / "weights.weights.h5"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    found, _ = load_checkpoint(tmp_path)
    assert found["epoch"] == 1 and "sha256 does not match" in found["fallback"]


def test_when_no_checkpoint_is_usable_one_sentence_names_every_damaged_file(tmp_path, model):
    for epoch in (1, 2):
        save_checkpoint(tmp_path, model, state(epoch))
    (tmp_path / "epoch-00002" / "weights.weights.h5").write_bytes(b"")
    (tmp_path / "epoch-00001" / "state.json").unlink()
    with pytest.raises(NnlabError) as caught:
        load_checkpoint(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"No usable checkpoint in {tmp_path}:")
    assert str(tmp_path / "epoch-00002" / "weights.weights.h5") in message
    assert str(tmp_path / "epoch-00001" / "state.json") + " is missing" in message
    assert load_checkpoint(tmp_path / "none") is None  # no checkpoint at all is not an error here


def test_an_older_checkpoint_without_a_checksum_still_loads(tmp_path, model):
    """What nnlab wrote before checksums: one slot, state.json without weights_sha256/weights_bytes."""
    slot = save_checkpoint(tmp_path, model, state(3))
    old = json.loads((slot / "state.json").read_text())
    del old["weights_sha256"], old["weights_bytes"]
    (slot / "state.json").write_text(json.dumps(old))
    found, weights = load_checkpoint(tmp_path)
    assert found["epoch"] == 3 and weights == slot / "weights.weights.h5"


def test_a_resume_that_fell_back_writes_over_the_damaged_slot_and_keeps_the_one_before(tmp_path, model):
    for epoch in (1, 2):
        save_checkpoint(tmp_path, model, state(epoch))
    (tmp_path / "epoch-00002" / "weights.weights.h5").write_bytes(b"garbage")
    assert load_checkpoint(tmp_path)[0]["epoch"] == 1
    save_checkpoint(tmp_path, model, state(2))  # epoch 2 trained again
    assert sorted(p.name for p in tmp_path.glob("epoch-*")) == ["epoch-00001", "epoch-00002"]
    found, _ = load_checkpoint(tmp_path)
    assert found["epoch"] == 2 and "fallback" not in found


def test_restoring_weights_that_do_not_fit_the_model_names_the_file(tmp_path, model):
    slot = save_checkpoint(tmp_path, model, state(1))
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    other.compile("adam", "mse")
    with pytest.raises(NnlabError, match=f"Cannot load the checkpoint {slot / 'weights.weights.h5'} into the model"):
        restore_weights(other, slot / "weights.weights.h5")


# ---------------------------------------------------------------- a full disk, injected (runs everywhere)

def test_a_full_disk_while_the_weights_are_written_leaves_no_temporary_folder(tmp_path, model, monkeypatch):
    save_checkpoint(tmp_path, model, state(1))

    def full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # what was written before the disk filled
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(model), "save_weights", full)
    with pytest.raises(NoSpaceError, match=f"No space left for the checkpoint in {tmp_path}: .* MB free; free some "
                                           "space there or point trainer.checkpoint_dir at a larger disk"):
        save_checkpoint(tmp_path, model, state(2))
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.glob("epoch-*")) == ["epoch-00001"]
    assert load_checkpoint(tmp_path)[0]["epoch"] == 1


def test_a_full_disk_while_state_json_is_written_leaves_the_previous_checkpoint(tmp_path, model, monkeypatch):
    save_checkpoint(tmp_path, model, state(1))

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoints, "write_text", full)
    with pytest.raises(NoSpaceError, match="No space left for the checkpoint"):
        save_checkpoint(tmp_path, model, state(2))
    assert leftovers(tmp_path) == [] and load_checkpoint(tmp_path)[0]["epoch"] == 1


def test_too_little_free_space_is_refused_before_anything_is_written(tmp_path, model, monkeypatch):
    monkeypatch.setattr(files, "free_bytes", lambda path: 1000)
    written = []
    monkeypatch.setattr(type(model), "save_weights", lambda self, path, **kw: written.append(path))
    with pytest.raises(NoSpaceError, match=r"needs about \d+\.\d MB, 0\.0 MB free"):
        save_checkpoint(tmp_path, model, state(1))
    assert written == [] and list(tmp_path.iterdir()) == []


def test_two_writers_of_one_file_never_share_a_partial_file(tmp_path):
    """Two `nnlab resume` once wrote `latest` together and one died of FileNotFoundError: .latest.partial."""
    target, errors = tmp_path / "latest", []

    def write(name):
        try:
            for i in range(150):
                files.write_text(target, f"{name}-{i}")
        except OSError as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and target.read_text() in ("a-149", "b-149")
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]


# ---------------------------------------------------------------- a real full disk (a tmpfs)

RESCUE = textwrap.dedent("""
    import sys
    from pathlib import Path
    import keras
    from nnlab import files
    from nnlab.training.checkpoints import save_checkpoint
    files.free_bytes = lambda path: 1 << 40  # the check passes: the disk fills while h5py writes
    model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(3000), keras.layers.Dense(10)])
    model.compile("adam", "mse")
    model.optimizer.build(model.trainable_variables)
    try:
        save_checkpoint(Path(sys.argv[1]), model, {"epoch": 1, "result": {}})
    except files.NoSpaceError as err:
        print("refused:", err)
""")


def test_h5py_meeting_a_full_disk_mid_write_ends_in_one_sentence_not_a_crash(tmp_path):
    """The disk fills while h5py writes the weights (another process took the space after the check): HDF5 is
    left holding a file it cannot close, which crashed the interpreter at exit (exit 139) after two h5py
    tracebacks. Now: one sentence, a normal exit, no temporary folder."""
    with small_disk(tmp_path / "disk", "2m") as disk:
        done = subprocess.run([sys.executable, "-c", RESCUE, str(disk / "ckpt")], capture_output=True, text=True,
                              timeout=300, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.startswith(f"refused: No space left for the checkpoint in {disk / 'ckpt'}"), done.stdout
        assert "Traceback" not in done.stderr and "h5py" not in done.stderr, done.stderr[-3000:]
        assert leftovers(disk) == [] and not list((disk / "ckpt").glob("epoch-*"))


def test_a_disk_too_small_for_the_checkpoint_is_refused_in_one_sentence(tmp_path):
    with small_disk(tmp_path / "disk", "1m") as disk:
        model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(3000), keras.layers.Dense(10)])
        model.compile("adam", "mse")
        with pytest.raises(NoSpaceError, match=rf"No space left for the checkpoint in {disk / 'ckpt'}: needs about "
                                               r"\d+\.\d MB, \d\.\d MB free"):
            save_checkpoint(disk / "ckpt", model, state(1))
        assert leftovers(disk) == [] and not list((disk / "ckpt").glob("epoch-*"))
        fill(disk)
        with pytest.raises(NoSpaceError):  # a completely full disk: refused the same way
            save_checkpoint(disk / "ckpt", model, state(1))


# ---------------------------------------------------------------- one owner

def test_a_second_claim_refuses_naming_host_and_pid_and_a_released_folder_can_be_claimed(tmp_path):
    with claim(tmp_path, "run1") as me:
        assert json.loads((tmp_path / OWNER).read_text())["pid"] == os.getpid() == me["pid"]
        with pytest.raises(RunOwnedError) as caught, claim(tmp_path, "run1"):
            pass
        message = str(caught.value)
        assert f"Run run1 is being trained by process {os.getpid()} on {socket.gethostname()}" in message
        assert "\n" not in message
        with pytest.raises(RunOwnedError, match=f"in use by run run1 .*process {os.getpid()}"), claim(tmp_path, "run2"):
            pass
    assert not (tmp_path / OWNER).exists()  # released: the record goes with it
    with claim(tmp_path, "run1"):
        pass


HOLDER = textwrap.dedent("""
    import sys, time
    from nnlab.training.checkpoints import claim
    with claim(sys.argv[1], "run1"):
        print("held", flush=True)
        time.sleep(600)
""")


def hold_in_another_process(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_folder_whose_owner_was_killed_is_taken_over_and_its_leftovers_removed(tmp_path):
    holder = hold_in_another_process(tmp_path)
    try:
        with pytest.raises(RunOwnedError, match=f"process {holder.pid} on {socket.gethostname()}"), \
                claim(tmp_path, "run1"):
            pass
        (tmp_path / ".tmp-deadbeef").mkdir()  # a checkpoint it was writing when it died
        (tmp_path / ".latest.x1.partial").write_text("epoch-")
    finally:
        holder.kill()
        holder.wait()
    with claim(tmp_path, "run1") as me:
        assert me["pid"] == os.getpid() and json.loads((tmp_path / OWNER).read_text())["pid"] == os.getpid()
        assert leftovers(tmp_path) == []
