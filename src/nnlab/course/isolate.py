"""One submission in a process of its own, with limits: what `nnlab course grade` runs for each student.

The worker (`python -m nnlab.course.worker REQUEST`, `worker.py`) imports and runs the script; this side starts
it and watches: a hard wall-clock limit on the whole script; a memory limit (the worker's RLIMIT_DATA, so that an
allocation past it fails inside the script, and the resident memory of all its processes read here twice a
second, for what escapes that); a working folder of its own; and at the end every process it started, killed.
The worker never talks to the store and gets no MLflow variables: it writes its records to an outbox in its
folder, which the grader sends once it has ended, and its verdict to verdict.json. A process that could not write
one (killed, exited by itself, crashed) is named here from how it ended and what it was doing (`stage`).

Not a sandbox: the script runs as the user who grades and can read what that user can. It protects the grader
and the other submissions from a script's crash, loop or appetite, not from a hostile author.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

WORKER = "nnlab.course.worker"
POLL_S = 0.5
GB = 1 << 30
INTERRUPTED = "grading was interrupted before this script ended; grade it again"
ABSL_LINE = re.compile(r"[IWEF]\d{4} ")  # TensorFlow's C++ log lines (no GPU here, ...): not the script's words


@dataclass
class Request:
    """What the worker is asked to do (request.json in `folder`, its working folder)."""

    script: str
    data_path: str
    lab: str
    run_id: str
    folder: str
    epochs: int | None = None
    max_minutes: float | None = None
    threads: int | None = None
    memory_gb: float | None = None

    def path(self, name: str) -> Path:
        """A file of the worker's folder: outbox/, verdict.json, stage, output.txt, submission/ (its cwd)."""
        return Path(self.folder) / name


@dataclass
class Outcome:
    verdict: str  # PASS, FAIL or ERROR
    reason: str  # "" for a PASS; why, in one sentence, otherwise
    score: float | None = None
    seconds: float | None = None
    epochs: int | None = None
    peak_gb: float | None = None


def supervise(request: Request, wall_minutes: float, cancel: threading.Event | None = None) -> Outcome:
    """Run the worker for `request` and return its outcome; every process it started is gone on return. `cancel`
    set (the teacher's Ctrl-C) ends it at once."""
    folder = Path(request.folder)
    for name in ("submission", "home", "tmp"):
        request.path(name).mkdir(parents=True, exist_ok=True)
    (folder / "request.json").write_text(json.dumps(asdict(request)))
    start = time.monotonic()
    with open(request.path("output.txt"), "wb") as output:
        process = subprocess.Popen([sys.executable, "-m", WORKER, str(folder / "request.json")],
                                   cwd=request.path("submission"), env=worker_env(request), stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    watch = MemoryWatch(process.pid, request.memory_gb)
    try:
        timed_out = wait(process, start + 60 * wall_minutes, cancel)
    finally:
        kill_all(process.pid)
        process.wait()
        watch.stop()
    if cancel is not None and cancel.is_set():
        return Outcome("ERROR", INTERRUPTED)
    outcome = ended(request, process.returncode, timed_out, watch, wall_minutes)
    outcome.seconds = outcome.seconds if outcome.seconds is not None else time.monotonic() - start
    outcome.peak_gb = round(watch.peak / GB, 3)
    return outcome


def wait(process: subprocess.Popen, deadline: float, cancel: threading.Event | None) -> bool:
    """Wait for the process until the deadline (monotonic) or a cancel; True where the deadline passed."""
    while time.monotonic() < deadline:
        if cancel is not None and cancel.is_set():
            return False
        try:
            process.wait(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
            return False
        except subprocess.TimeoutExpired:
            continue
    return process.poll() is None


def worker_env(request: Request) -> dict[str, str]:
    """The grader's environment without MLflow's variables (the store, a user name, a password or token), with a
    home and temp folder of the submission's own (no ~/.mlflow/credentials either); Keras' cache and the data
    root stay where they were, so cached weights and nnlab's datasets are found."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "NNLAB_OUTBOX_DIR"}
    home = Path.home()
    env.setdefault("KERAS_HOME", str(home / ".keras"))
    env.setdefault("NNLAB_DATA_DIR", str(home / ".local/share/nnlab/datasets"))
    env |= {"HOME": str(request.path("home")), "TMPDIR": str(request.path("tmp")), "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL") or "2"}
    if request.threads:
        env["OMP_NUM_THREADS"] = str(request.threads)
    return env


def ended(request: Request, code: int, timed_out: bool, watch: "MemoryWatch", wall_minutes: float) -> Outcome:
    """The verdict the worker wrote, or one sentence on how its process ended without writing one."""
    stage = read_text(request.path("stage")) or "starting"
    if watch.over:
        return Outcome("ERROR", f"out of memory: its processes used more than the {request.memory_gb:g} GB limit "
                                f"during {stage}; killed")
    if timed_out:
        return Outcome("ERROR", f"out of time: still running during {stage} after the {wall_minutes:g}-minute "
                                "wall-clock limit; killed")
    verdict = read_text(request.path("verdict.json"))
    if verdict:
        return Outcome(**json.loads(verdict))
    if code < 0:
        name = signal_name(-code)
        if request.memory_gb and watch.peak >= 0.9 * request.memory_gb * GB:
            return Outcome("ERROR", f"out of memory: killed by {name} at {watch.peak / GB:.1f} GB (limit "
                                    f"{request.memory_gb:g} GB) during {stage}")
        how = "was killed by" if -code in (signal.SIGKILL, signal.SIGTERM) else "crashed with"
        return Outcome("ERROR", f"the process {how} {name} during {stage}{last_words(request)}")
    return Outcome("ERROR", f"the process exited by itself (exit code {code}) during {stage}, before it was "
                            "graded; a script must return its results, not exit")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def last_words(request: Request) -> str:
    lines = [line for line in (read_text(request.path("output.txt")) or "").splitlines()
             if line.strip() and not ABSL_LINE.match(line)]
    return f" (its last output: {lines[-1].strip()[:200]})" if lines else ""


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def processes_of(root: int) -> dict[int, int]:
    """{pid: resident bytes} of `root`'s session and every descendant of `root` (one that left the session too)."""
    table: dict[int, tuple[int, int, int]] = {}  # pid: (parent, session, resident pages)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[3]), int(fields[21]))
    mine = {pid for pid, (_, session, _) in table.items() if session == root}
    grown = True
    while grown:
        more = {pid for pid, (parent, _, _) in table.items() if parent in mine} - mine
        mine |= more
        grown = bool(more)
    page = os.sysconf("SC_PAGE_SIZE")
    return {pid: table[pid][2] * page for pid in mine}


def kill_all(root: int) -> None:
    """SIGKILL to `root`'s process group and every process `processes_of` finds; a gone one is no error."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(root, signal.SIGKILL)
    for pid in processes_of(root) if Path("/proc").is_dir() else ():
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


class MemoryWatch:
    """The resident memory of a submission's processes, read every POLL_S: its peak, and a kill past the limit."""

    def __init__(self, root: int, limit_gb: float | None):
        self.root, self.limit, self.peak, self.over = root, (limit_gb or 0) * GB, 0, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"memory-watch-{root}")
        if Path("/proc").is_dir():
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            used = sum(processes_of(self.root).values())
            self.peak = max(self.peak, used)
            if self.limit and used > self.limit:
                self.over = True
                kill_all(self.root)
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
