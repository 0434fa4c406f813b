"""A run's outbox: what training logs is written to disk first and sent to MLflow by a background thread.

Training must never wait on the tracking server, and an outage of any length must not lose a point. So every
metric, param, tag, artifact and the final status is appended to `outbox.jsonl` (fsync'd: a few calls per epoch)
and returns at once; a daemon thread sends the records in order and counts them in `outbox.sent` only once MLflow
accepted them. A record sent twice (the answer was lost, the process died before counting it) does no harm:
MLflow keeps one copy of an identical metric, params and tags are set to the same value, an artifact is rewritten.
Records still queued when the process ends stay on disk; `sync` (a resume, `nnlab runs --sync`) sends them later.

Folder layout: outbox.jsonl, outbox.sent (records delivered), files/ (copies of queued artifacts, removed once
sent), outbox.rejected.jsonl (records the server refused, with its reason), outbox.lock (one sender at a time).
"""

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import requests
from filelock import FileLock, Timeout
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

# MLflow's own limits on one log_batch call (mlflow/utils/validation.py), the request size with headroom.
MAX_METRICS, MAX_PARAMS_TAGS, MAX_ENTITIES, MAX_BYTES = 1000, 100, 1000, 900_000
FIRST_WAIT_S, MAX_WAIT_S = 0.5, 10.0
# MLflow reads these on every request. Its defaults retry an unreachable server for minutes (7 retries, backoff)
# with a 120 s timeout each; the outbox retries forever itself, so one attempt must fail fast instead.
# A few quick retries stay: under a class's load a server resets a connection now and then, and the calls a job
# makes outside the outbox (opening the run, logging the model) must survive that (30 students at once: 1 job of
# 30 failed on a reset with no retries). Three retries 1, 2, 4 s apart, 20 s per try: about half a minute at most.
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
# 408/429: busy. 401/403: the credentials, not the record, are wrong: keep the queue until they are fixed.
RETRY_STATUS = {401, 403, 408, 429}


def bound_http_waits() -> None:
    """Bounds each MLflow HTTP call to about half a minute (HTTP_ENV), unless the user set these variables. This
    holds for the whole process's MLflow calls, which is intended: the outbox does the long retrying."""
    for name, value in HTTP_ENV.items():
        os.environ.setdefault(name, value)


def retryable(err: Exception) -> bool:
    """True where the server may take the record later (down, slow, busy); False where it refused the record."""
    if isinstance(err, MlflowException):  # rest_utils wraps connection errors and timeouts as INTERNAL_ERROR (500)
        status = err.get_http_status_code()
    elif isinstance(err, requests.RequestException):  # artifact uploads raise requests' own HTTPError
        status = err.response.status_code if err.response is not None else 503
    elif isinstance(err, OSError):  # a network file system; a missing copy in files/ will never come back
        return not isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError))
    else:
        return False
    return status >= 500 or status in RETRY_STATUS


def _metric(m: Metric) -> list:
    extra = [m.model_id, m.dataset_name, m.dataset_digest]
    return [m.key, m.value, m.timestamp, m.step] + (extra if any(extra) else [])


class Outbox:
    """One run's queue in `folder`; only one process appends to it (the run's), any may send it."""

    def __init__(self, folder: Path, client: MlflowClient, run_id: str):
        self.folder, self.client, self.run_id = Path(folder), client, run_id
        self.folder.mkdir(parents=True, exist_ok=True)
        self.queue, self.sent_file = self.folder / "outbox.jsonl", self.folder / "outbox.sent"
        self._write, self._changed = threading.RLock(), threading.Condition()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._solo_until, self._outage = 0, False
        self.queue.touch()
        data = self.queue.read_bytes()
        if data and not data.endswith(b"\n"):  # a write torn by a crash: end it, the sender rejects that line
            self._append_bytes(b"\n")
            data += b"\n"
        self._count = data.count(b"\n")

    def batch(self, metrics=(), params=(), tags=()) -> None:
        if metrics or params or tags:
            self._append({"kind": "batch", "metrics": [_metric(m) for m in metrics],
                          "params": [[p.key, str(p.value)] for p in params],
                          "tags": [[t.key, str(t.value)] for t in tags]})

    def artifact(self, local_path, artifact_path: str | None = None) -> None:
        """A file, or a folder whose contents go under artifact_path (as MlflowClient.log_artifacts). Copied
        first: the caller may delete it."""
        src = Path(local_path)
        self._queue_file(src.name, artifact_path, lambda copy: (shutil.copytree if src.is_dir() else
                                                                 shutil.copy2)(src, copy))

    def text(self, text: str, artifact_file: str) -> None:
        self._queue_file(Path(artifact_file).name, os.path.dirname(artifact_file) or None,
                         lambda copy: copy.write_text(text, encoding="utf-8"))

    def terminate(self, status: str, end_time_ms: int | None = None) -> None:
        # The end time is now, not whenever the server comes back.
        self._append({"kind": "end", "status": status, "end_time": end_time_ms or int(time.time() * 1000)})

    def _queue_file(self, name: str, artifact_path: str | None, write) -> None:
        with self._write:
            folder = self.folder / "files" / f"{self._count:06d}"
            shutil.rmtree(folder, ignore_errors=True)  # left by a process that died before queueing its record
            folder.mkdir(parents=True)
            write(folder / name)
            self._append({"kind": "artifact", "file": f"files/{folder.name}/{name}", "path": artifact_path})

    def _append(self, record: dict) -> None:
        with self._write:
            self._append_bytes(json.dumps(record).encode() + b"\n")
            self._count += 1
        self._wake.set()

    def _append_bytes(self, data: bytes) -> None:
        with open(self.queue, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def _sent(self) -> int:
        try:
            return int(self.sent_file.read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def pending(self) -> int:
        return max(0, self._count - self._sent())

    def flush(self, timeout_s: float) -> int:
        """Waits up to timeout_s for the queue to drain; returns the records still undelivered."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while (left := self.pending()) and (wait := deadline - time.monotonic()) > 0:
                self._changed.wait(min(wait, 0.5))  # polls too: another process may be the sender
        return left

    def start(self) -> "Outbox":
        bound_http_waits()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"outbox-{self.run_id[:8]}", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout_s: float) -> int:
        """flush, then stops the sender; an HTTP attempt in flight is left to the daemon thread."""
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return self.pending()

    # The sender thread:

    def _run(self) -> None:
        lock = FileLock(self.folder / "outbox.lock")
        if not self._take(lock):
            return
        try:
            with open(self.queue, "rb") as f:
                self._pos, wait = sum(len(f.readline()) for _ in range(self._sent())), FIRST_WAIT_S
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    if not self._send_some():
                        self._wake.wait(1.0)
                    wait = FIRST_WAIT_S
                except Exception as err:  # noqa: BLE001 - sorted out in _failed; the thread must live on
                    if self._failed(err):
                        self._stop.wait(wait)
                        wait = min(2 * wait, MAX_WAIT_S)
        finally:
            lock.release()

    def _take(self, lock: FileLock) -> bool:
        wait = FIRST_WAIT_S
        while not self._stop.is_set():
            try:
                lock.acquire(timeout=0)
                return True
            except Timeout:  # another process sends this queue; take over if it goes away
                self._stop.wait(wait)
                wait = min(2 * wait, MAX_WAIT_S)
        return False

    def _lines(self, limit: int = 2000) -> list[bytes]:
        """The undelivered complete lines, in order (a line still being written is left for later)."""
        with open(self.queue, "rb") as f:
            f.seek(self._pos)
            return [line for _, line in zip(range(limit), f) if line.endswith(b"\n")]

    def _advance(self, lines: list[bytes]) -> None:
        """Counts these lines delivered: atomically on disk, then in memory."""
        if self._outage:
            log.info("tracking server back: sending the queued records of run %s", self.run_id)
            self._outage = False
        tmp = self.sent_file.with_suffix(".tmp")
        tmp.write_text(str(self._sent() + len(lines)))
        os.replace(tmp, self.sent_file)
        self._pos += sum(map(len, lines))
        with self._changed:
            self._changed.notify_all()

    def _send_some(self) -> bool:
        """Sends the next record, or the next run of batch records; False when there is nothing to send."""
        lines, self._span = self._lines(), (0, 0)
        if not lines:
            return False
        record = json.loads(lines[0])
        if record["kind"] == "artifact":
            local = self.folder / record["file"]
            send = self.client.log_artifacts if local.is_dir() else self.client.log_artifact
            send(self.run_id, str(local), record["path"])
            self._advance(lines[:1])
            shutil.rmtree(local.parent, ignore_errors=True)
        elif record["kind"] == "end":
            self.client.set_terminated(self.run_id, record["status"], record["end_time"])
            self._advance(lines[:1])
        else:
            self._send_batches(lines, [record])
        return True

    def _send_batches(self, lines: list[bytes], run: list[dict]) -> None:
        for line in lines[1:] if self._sent() >= self._solo_until else []:
            try:
                record = json.loads(line)
            except ValueError:  # a torn line: rejected once it comes first
                break
            if record["kind"] != "batch":
                break
            run.append(record)
        done = 0
        for first, last, complete, metrics, params, tags in _calls(run):
            self._span = (first, last)
            self.client.log_batch(self.run_id, metrics, params, tags, synchronous=True)
            if complete > done:
                self._advance(lines[done:complete])
                done = complete

    def _failed(self, err: Exception) -> bool:
        """Returns True when the record should be retried after a wait."""
        if retryable(err):
            if not self._outage:
                log.warning("tracking server unavailable (%s): run %s keeps its records in %s and retries",
                            _first_line(err), self.run_id, self.folder)
                self._outage = True
            return True
        first, last = self._span
        if last > first:  # a merged call was refused: send its records one by one to find the culprit
            self._solo_until = self._sent() + (last - first) + 1
            return False
        line = self._lines(1)[0]
        with open(self.folder / "outbox.rejected.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"record": line.decode(errors="replace").strip(), "error": str(err)}) + "\n")
        log.warning("a record of run %s was not accepted (%s): moved to outbox.rejected.jsonl", self.run_id,
                    _first_line(err))
        self._advance([line])
        return False


def sync(folder: Path, client: MlflowClient, run_id: str, timeout_s: float) -> int:
    """Sends what an earlier process left in the run's outbox (a resume, `nnlab runs --sync`); returns how many
    records are still undelivered. Where a live process holds the queue, that process sends it."""
    if not (Path(folder) / "outbox.jsonl").exists():
        return 0
    return Outbox(folder, client, run_id).start().close(timeout_s)


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _calls(run: list[dict]):
    """Splits consecutive batch records into log_batch calls within MLflow's limits, in order. Yields (first,
    last, complete, metrics, params, tags): the records (indices in run) the call touches, and how many records
    are wholly sent once it succeeds. A key twice in one call is refused by MLflow: it starts a new call."""
    call, keys, size, first, last = {"m": [], "p": [], "t": []}, set(), 0, None, 0
    for i, record in enumerate(run):
        items = [("m", x) for x in record["metrics"]] + [("p", x) for x in record["params"]]
        for kind, item in items + [("t", x) for x in record["tags"]]:
            item_size = len(json.dumps(item))
            if first is not None and (sum(map(len, call.values())) >= MAX_ENTITIES or size + item_size > MAX_BYTES
                                      or len(call[kind]) >= (MAX_METRICS if kind == "m" else MAX_PARAMS_TAGS)
                                      or (kind != "m" and (kind, item[0]) in keys)):
                yield first, last, i, *_entities(call)
                call, keys, size, first = {"m": [], "p": [], "t": []}, set(), 0, None
            first = i if first is None else first
            last, size = i, size + item_size
            call[kind].append(item)
            keys.add((kind, item[0]))
    if first is not None:
        yield first, last, len(run), *_entities(call)


def _entities(call: dict) -> tuple[list, list, list]:
    return ([Metric(*m) for m in call["m"]], [Param(*p) for p in call["p"]], [RunTag(*t) for t in call["t"]])
