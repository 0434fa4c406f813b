"""Runs left RUNNING by a process that died: `nnlab runs --stale` lists them, `--kill` marks them KILLED.

A process that is killed outright (SIGKILL, the out-of-memory killer, a node that goes down) cannot end its
run, and MLflow shows it RUNNING for ever. Every nnlab run records where it runs (`nnlab.host`, `nnlab.pid`,
and when that process started) and a heartbeat refreshed with its epoch metrics, so a run is stale when:

- it runs on this host and its process is gone (or the pid now belongs to another program), or
- it runs on another host and its heartbeat is older than the silence limit (a cluster job: run the command
  on the job's node to judge by its process instead);
- a sweep's parent run is stale when it is itself stale (its launching process is gone, or silent with all its
  jobs) and none of its jobs is still RUNNING: `--kill` then closes it with its jobs.

Runs that carry no `nnlab.pid` (another tool's, or older nnlab's) are left alone: nothing tells their process.
Keras is not imported here.
"""

import argparse
import socket
import time
from collections.abc import Iterable
from datetime import datetime

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from nnlab.tracking.accounts import redact
from nnlab.errors import NnlabError, closest
from nnlab.processes import pid_alive, process_start_time
from nnlab.tracking.store import client as store_client
from nnlab.tracking.store import find_store, store_lock
from nnlab.tracking.track import (
    HEARTBEAT_TAG,
    HOST_TAG,
    KILLED_REASON_TAG,
    PARENT_TAG,
    PID_STARTED_TAG,
    PID_TAG,
    ROLE_TAG,
)

DEFAULT_SILENCE_S = 3600.0  # an epoch longer than an hour on another host would look dead: raise --max-silence
PID_START_SLACK_S = 5  # /proc's boot time moves by a second or so; a reused pid starts later than that


def heartbeat(run: Run) -> float:
    """The run's last sign of life (unix time): its heartbeat tag, else its start."""
    try:
        return float(run.data.tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        return run.info.start_time / 1000


def own_verdict(run: Run, host: str, now: float, max_silence_s: float | None) -> str | None:
    """Why the run's own process is gone, or None (alive, or cannot be told). `max_silence_s=None` judges runs
    of this host only."""
    tags = run.data.tags
    try:
        pid, run_host = int(tags[PID_TAG]), tags[HOST_TAG]
    except (KeyError, ValueError):
        return None
    if run_host == host:
        if not pid_alive(pid):
            return f"process {pid} is gone from this host"
        recorded, actual = tags.get(PID_STARTED_TAG), process_start_time(pid)
        try:
            if recorded and actual and abs(float(recorded) - actual) > PID_START_SLACK_S:
                return f"process {pid} on this host is another program now (started {stamp(actual)})"
        except ValueError:
            pass
        return None
    silence = now - heartbeat(run)
    if max_silence_s is not None and silence > max_silence_s:
        return f"no heartbeat from {run_host} for {duration(silence)} (limit {duration(max_silence_s)})"
    return None


def search(client: MlflowClient, experiment_ids: list[str], query: str) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_stale(client: MlflowClient, max_silence_s: float = DEFAULT_SILENCE_S,
               experiment_ids: Iterable[str] | None = None) -> list[tuple[Run, str]]:
    """(run, why) for every stale RUNNING run: jobs and single runs first, then sweep parents."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY,
                                                                             max_results=50000)]
    experiment_ids = list(experiment_ids)
    if not experiment_ids:
        return []
    host, now = socket.gethostname(), time.time()
    running = search(client, experiment_ids, "attributes.status = 'RUNNING'")
    stale: dict[str, tuple[Run, str]] = {}
    parents = []
    for run in running:
        if run.data.tags.get(ROLE_TAG) == "sweep":
            parents.append(run)
            continue
        why = own_verdict(run, host, now, max_silence_s)
        if why:
            stale[run.info.run_id] = (run, why)
    for parent in parents:
        children = search(client, [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
        if any(c.info.status == "RUNNING" and c.info.run_id not in stale for c in children):
            continue  # a job still runs: the sweep is not over
        why = parent_verdict(parent, children, host, now, max_silence_s)
        if why:
            stale[parent.info.run_id] = (parent, why)
    return sorted(stale.values(), key=lambda item: item[0].data.tags.get(ROLE_TAG) == "sweep")


def parent_verdict(parent: Run, children: list[Run], host: str, now: float, max_silence_s: float) -> str | None:
    """A sweep parent is judged by its launching process; from another host, by the last sign of life of the
    sweep as a whole (its own heartbeat, its jobs' heartbeats and ends)."""
    if parent.data.tags.get(HOST_TAG) == host or PID_TAG not in parent.data.tags:
        why = own_verdict(parent, host, now, None)
    else:
        last = max([heartbeat(parent)] + [heartbeat(c) for c in children]
                   + [c.info.end_time / 1000 for c in children if c.info.end_time])
        silence = now - last
        why = (f"no sign of the sweep on {parent.data.tags[HOST_TAG]} for {duration(silence)} "
               f"(limit {duration(max_silence_s)})") if silence > max_silence_s else None
    if why is None:
        return None
    ended = sum(c.info.status != "RUNNING" for c in children)
    jobs = f"all {len(children)} jobs ended" if ended == len(children) else \
        f"{ended} of {len(children)} jobs ended, the others are stale"
    return f"sweep: {why}; {jobs}"


def stale_runs(client: MlflowClient, max_silence_s: float = DEFAULT_SILENCE_S,
               experiment_ids: Iterable[str] | None = None) -> list[Run]:
    """RUNNING runs whose process is gone: on this host by its pid, on another by a heartbeat older than
    `max_silence_s`; sweep parents whose launching process is gone and whose jobs have all ended (or are stale).
    Jobs come before their parents, the order `kill` needs."""
    return [run for run, _ in find_stale(client, max_silence_s, experiment_ids)]


def kill(client: MlflowClient, stale: list[tuple[Run, str]]) -> list[Run]:
    """Mark each run KILLED with its reason (`nnlab.killed_reason`); skips one that ended meanwhile."""
    killed = []
    for run, why in stale:
        if client.get_run(run.info.run_id).info.status != "RUNNING":
            continue
        client.set_tag(run.info.run_id, KILLED_REASON_TAG, why[:5000])
        client.set_terminated(run.info.run_id, "KILLED")
        killed.append(run)
    return killed


def stamp(unix: float) -> str:
    return datetime.fromtimestamp(unix).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def main(argv: list[str]) -> None:
    """`nnlab runs --stale [--kill] [--uri STORE] [--experiment NAME] [--max-silence MINUTES]`."""
    parser = argparse.ArgumentParser(prog="nnlab runs", description="Runs left RUNNING by a process that died: "
                                     "list them (--stale) and mark them KILLED (--kill).")
    parser.add_argument("--stale", action="store_true", help="list RUNNING runs whose process is gone")
    parser.add_argument("--kill", action="store_true", help="also mark them KILLED, with the reason as the tag "
                        f"{KILLED_REASON_TAG}")
    parser.add_argument("--sync", action="store_true", help="send what jobs queued for a tracking server while it "
                        "was down and could not send before they ended (their outboxes: $NNLAB_OUTBOX_DIR, by "
                        "default ~/.cache/nnlab/outbox)")
    parser.add_argument("--uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--experiment", help="only this experiment (default: every active one)")
    parser.add_argument("--max-silence", type=float, default=DEFAULT_SILENCE_S / 60, metavar="MINUTES",
                        help="a run on another host is stale after this long without a heartbeat "
                        f"(default {DEFAULT_SILENCE_S / 60:g}; the heartbeat comes with each epoch's metrics)")
    args = parser.parse_args(argv)
    if args.sync:
        sync(args.uri)
        if not args.stale:
            return
    if not args.stale:
        raise NnlabError("Say what to look for: `nnlab runs --stale` lists runs whose process died, "
                         "`nnlab runs --stale --kill` also marks them KILLED, `nnlab runs --sync` sends queued "
                         "records.")
    if args.max_silence <= 0:
        raise NnlabError(f"--max-silence must be a positive number of minutes, not {args.max_silence:g}.")
    uri = find_store(args.uri)
    with store_lock(uri):  # MLflow opens (and may migrate) the store with its client: one process at a time
        client = store_client(uri)
        experiments = {e.experiment_id: e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY,
                                                                                  max_results=50000)}
    ids = list(experiments)
    if args.experiment:
        ids = [i for i, name in experiments.items()
               if name == args.experiment or name.endswith(f"/{args.experiment}")]  # on a server: accounts' too
        if not ids:
            hint = closest(args.experiment, experiments.values())
            raise NnlabError(f"No experiment '{args.experiment}' in {redact(uri)}"
                             + (f"; did you mean '{hint}'?" if hint else "; leave out --experiment to search all."))
    stale = find_stale(client, args.max_silence * 60, ids)
    where = f"experiment '{args.experiment}'" if args.experiment else redact(uri)
    if not stale:
        print(f"nnlab: no stale runs in {where}.")
        return
    print(table(stale, experiments))
    if args.kill:
        killed = kill(client, stale)
        print(f"\nnnlab: marked {len(killed)} of {len(stale)} stale runs KILLED in {where}.")
    else:
        print(f"\nnnlab: {len(stale)} stale runs in {where}; `nnlab runs --stale --kill` marks them KILLED.")


def sync(uri: str | None) -> None:
    """Send the records that ended jobs left queued for this store; one sentence where some could not be sent."""
    from nnlab.tracking.delivery import outbox_root, sync_all

    client = store_client(find_store(uri))
    done, left, elsewhere = sync_all(client)
    other = f" ({elsewhere} queued for other stores stay in {outbox_root()})" if elsewhere else ""
    if left:
        raise NnlabError(f"{left} queued records could not be sent to {redact(client.tracking_uri)} (is the server "
                         f"up?); they stay queued: run `nnlab runs --sync` again later{other}.")
    print(f"nnlab: the queued records of {done} runs reached {redact(client.tracking_uri)}{other}.")


def table(stale: list[tuple[Run, str]], experiments: dict[str, str]) -> str:
    from tabulate import tabulate

    rows = []
    for run, why in stale:
        tags = run.data.tags
        beat = tags.get(HEARTBEAT_TAG)
        rows.append([run.info.run_id, run.info.run_name or "", experiments.get(run.info.experiment_id,
                     run.info.experiment_id), tags.get(HOST_TAG, "?"), tags.get(PID_TAG, "?"),
                     stamp(heartbeat(run)) if beat else "-", why])
    return tabulate(rows, ["run id", "name", "experiment", "host", "pid", "last heartbeat", "why stale"])
