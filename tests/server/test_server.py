"""`nnlab server`: a real PostgreSQL and MLflow server with accounts (the session's `tracking_server`), and the
one-line refusals of a start that cannot work."""

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nnlab.server import postgres, service
from nnlab.tracking.accounts import experiment_by_name, experiments_named
from nnlab.tracking.store import ensure_experiment, open_store


def search(url: str, auth=None) -> int:
    return requests.post(f"{url}/api/2.0/mlflow/experiments/search", json={"max_results": 10}, auth=auth,
                         timeout=30).status_code


def test_the_server_refuses_an_anonymous_request_401_and_a_wrong_password_but_lets_a_user_in(tracking_server):
    url = tracking_server.url
    assert search(url) == 401
    assert search(url, ("alice", "not-her-password")) == 401
    assert search(url, ("alice", tracking_server.passwords["alice"])) == 200


def test_the_secrets_are_readable_by_their_owner_only_and_on_no_command_line(tracking_server):
    secrets = tracking_server.folder / "secrets"
    assert secrets.stat().st_mode & 0o777 == 0o700
    for path in secrets.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    state = service.ServerDir(tracking_server.folder).state()
    command_line = (open(f"/proc/{state.mlflow_pid}/cmdline").read()).replace("\0", " ")
    for name in ("admin_password", "db_password"):
        assert (secrets / name).read_text().strip() not in command_line


def test_a_student_cannot_read_or_change_another_students_run_403_but_the_teacher_reads_it(tracking_server,
                                                                                         monkeypatch):
    tracking_server.sign_in(monkeypatch, "alice")
    _, alice, experiment_id = open_store(tracking_server.url, "private_lab")
    run = alice.create_run(experiment_id)
    alice.log_metric(run.info.run_id, "accuracy", 0.9)

    bob_session = requests.Session()
    bob_session.auth = ("bob", tracking_server.passwords["bob"])
    answer = bob_session.get(f"{tracking_server.url}/api/2.0/mlflow/runs/get", params={"run_id": run.info.run_id},
                             timeout=30)
    assert answer.status_code == 403
    tracking_server.sign_in(monkeypatch, "bob")
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
        MlflowClient(tracking_server.url).set_tag(run.info.run_id, "grade", "F")
    assert all(not e.name.startswith("alice/") for e in MlflowClient(tracking_server.url).search_experiments())

    tracking_server.sign_in(monkeypatch, "teach")
    seen = MlflowClient(tracking_server.url).get_run(run.info.run_id)
    assert seen.data.metrics["accuracy"] == 0.9 and "grade" not in seen.data.tags


def test_an_experiment_refused_while_mlflow_grants_its_creator_is_asked_again_and_a_lasting_refusal_is_a_sentence(
        tracking_server, monkeypatch):
    """MLflow grants an experiment's creator MANAGE after creating it, so another job of the same student that asks
    in between is refused (CI: a test polling a job's new experiment got 403). The lookup asks again."""
    tracking_server.sign_in(monkeypatch, "alice")
    open_store(tracking_server.url, "hers")
    tracking_server.sign_in(monkeypatch, "bob")
    bob = MlflowClient(tracking_server.url)
    with pytest.raises(MlflowException) as refusal:
        bob.get_experiment_by_name("alice/hers")
    with pytest.raises(MlflowException, match=r"'alice/hers' exists on http://127\.0\.0\.1:\d+ but this account may "
                                              r"not read it: log to another experiment name"):
        experiment_by_name(bob, "alice/hers", patience_s=0.5)

    own_id = ensure_experiment(bob, "bob/granted_late", None)
    lookup, asked = bob.get_experiment_by_name, []

    def refused_twice(name):
        asked.append(name)
        if len(asked) <= 2:
            raise refusal.value
        return lookup(name)

    monkeypatch.setattr(bob, "get_experiment_by_name", refused_twice)
    assert ensure_experiment(bob, "bob/granted_late", None) == own_id and len(asked) == 3


def test_two_students_experiments_of_one_name_do_not_collide_and_the_teacher_finds_both(tracking_server,
                                                                                       monkeypatch):
    ids = {}
    for user in ("alice", "bob"):
        tracking_server.sign_in(monkeypatch, user)
        _, client, ids[user] = open_store(tracking_server.url, "fashion_mnist")
        assert client.get_experiment(ids[user]).name == f"{user}/fashion_mnist"
        assert [e.experiment_id for e in experiments_named(client, "fashion_mnist")] == [ids[user]]
    assert ids["alice"] != ids["bob"]
    tracking_server.sign_in(monkeypatch, "teach")
    found = experiments_named(MlflowClient(tracking_server.url), "fashion_mnist")
    assert {e.name for e in found} == {"alice/fashion_mnist", "bob/fashion_mnist"}


def test_status_says_where_the_server_runs(tracking_server, nnlab_cli):
    code, out, _ = nnlab_cli("server", "status", str(tracking_server.folder))
    assert code == 0
    assert tracking_server.url in out and "PostgreSQL runs" in out


def test_starting_a_running_server_again_is_one_line_and_non_zero(tracking_server, nnlab_cli):
    code, out, err = nnlab_cli("server", "start", str(tracking_server.folder), "--port", str(service.free_port()))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "already runs at" in err and tracking_server.url in err


def test_a_port_in_use_is_one_line_and_non_zero(tmp_path, nnlab_cli):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = nnlab_cli("server", "start", str(tmp_path / "srv"), "--port", str(taken.getsockname()[1]))
    assert code == 1 and err.count("\n") == 1 and "cannot be used" in err and "--port" in err
    assert not (tmp_path / "srv").exists()


def test_a_missing_postgresql_is_one_line_and_non_zero(tmp_path, nnlab_cli, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(postgres, "BIN_GLOB", str(tmp_path / "none"))
    code, _, err = nnlab_cli("server", "start", str(tmp_path / "srv"))
    assert code == 1 and err.count("\n") == 1 and "PostgreSQL is not installed" in err and "apt install" in err


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_owned_by_someone_else_is_one_line_and_non_zero(tmp_path, nnlab_cli):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    code, _, err = nnlab_cli("server", "start", str(theirs), "--port", str(service.free_port()))
    assert code == 1 and err.count("\n") == 1 and "belongs to another user" in err
    assert list(theirs.iterdir()) == []


@pytest.mark.slow
def test_stop_leaves_no_process_behind():
    parent = Path(tempfile.mkdtemp(prefix="nnlab-server-"))  # not pytest's: PostgreSQL's user must pass through
    os.chmod(parent, 0o711)
    folder = parent / "srv"
    state = service.start(folder, port=service.free_port(), workers=1)
    assert postgres.running(service.ServerDir(folder))
    assert "Stopped the MLflow server" in service.stop(folder)
    assert not service.group_alive(state.mlflow_pid)
    assert not postgres.running(service.ServerDir(folder))
    assert subprocess.run(["pgrep", "-f", str(folder)], capture_output=True).returncode == 1
    assert service.stop(folder).startswith("Nothing was running")
    shutil.rmtree(parent)
