"""`nnlab course grade`: a class graded, each script in a process of its own with limits; a verdict with its
reason, an MLflow run and a table row a student, whatever the script does."""

import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.course_class import variant, write_class
from fixtures.course_layouts import fashion_layout
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nnlab.course.isolate import MemoryWatch, kill_all, processes_of
from nnlab.processes import pid_alive

LIMITS = ("--wall-minutes", "1.5", "--memory-gb", "2")


def course_runs(store: str) -> dict:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("course")
    return {r.data.tags["course.student"]: r for r in client.search_runs([experiment.experiment_id])}


def table(folder: Path, lab: str) -> dict[str, dict]:
    with open(folder / f"grade_{lab}.csv", newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def graders_workers(folder: Path) -> list[str]:
    """Command lines of live processes started for submissions under `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in line and "nnlab.course.worker" in line:
            found.append(line)
    return found


def test_a_class_gets_a_verdict_with_its_reason_a_run_and_a_row_per_student(nnlab_cli, tmp_path, store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "teachers-s3cret")  # must not reach a student's script
    data = fashion_layout(tmp_path, n_train=200, n_test=60)
    expected = write_class(tmp_path / "class")
    (tmp_path / "class" / "zoe.py").write_text(variant(12, top="import os\n", load=(
        "    open('env.txt', 'w').write(repr(dict(os.environ)))\n")))
    expected["zoe"] = ("PASS", "")
    out_dir = tmp_path / "grades"
    code, out, err = nnlab_cli("course", "grade", str(tmp_path / "class"), str(data), "--lab", "exer_2", "--jobs", "2",
                               *LIMITS, "--uri", store, "--out", str(out_dir))
    assert code == 0, err
    rows = table(out_dir, "exer_2")
    assert list(rows) == sorted(expected)
    for student, (verdict, reason) in expected.items():
        assert rows[student]["verdict"] == verdict and reason in rows[student]["reason"], rows[student]
    assert float(rows["anna"]["score"]) >= 87 and float(rows["ben"]["score"]) < 87 and rows["anna"]["epochs"] == "12"
    assert f"exer_2 (Fashion-MNIST, CNN with Adam): passed 3 of {len(expected)}; 9 could not be scored" in out
    assert "teachers-s3cret" not in (out_dir / "work/zoe/submission/env.txt").read_text()
    assert "MLFLOW_TRACKING" not in (out_dir / "work/zoe/submission/env.txt").read_text()
    assert graders_workers(out_dir) == []  # gus's endless loop included
    runs = course_runs(store)
    assert sorted(runs) == sorted(expected)
    for student, run in runs.items():
        verdict = expected[student][0]
        assert run.data.tags["course.verdict"] == verdict and run.data.tags["course.lab"] == "exer_2"
        assert run.info.status == ("FAILED" if verdict == "ERROR" else "FINISHED"), student
        assert run.data.tags.get("error", "") == rows[student]["reason"] or verdict != "ERROR"
        assert rows[student]["run_id"] == run.info.run_id
    artifacts = {a.path for a in MlflowClient(store).list_artifacts(runs["anna"].info.run_id)}
    assert {"script", "output.txt", "curves.png", "confusion_matrix.png"} <= artifacts
    assert runs["anna"].data.metrics["test_accuracy"] >= 0.87  # sent from the worker's outbox by the grader
    page = (out_dir / "grade_exer_2.html").read_text()
    assert '<td class="pass">PASS</td>' in page and '<td class="fail">ERROR</td>' in page
    markdown = (out_dir / "grade_exer_2.md").read_text()
    assert "**PASS**" in markdown and "**ERROR**" in markdown and " nan " not in markdown
    code, out, err = nnlab_cli("report", "--lab", "exer_2", "--uri", store, "--out", str(tmp_path / "report"))
    assert code == 0 and f"({len(expected)} runs)" in out, err  # the lab report reads the same runs


def test_a_submission_past_the_memory_limit_is_killed_with_its_children(tmp_path):
    hog = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, "
                            "'-c', 'import time; time.sleep(60)']); a = bytearray(400 << 20); time.sleep(60)"],
                           start_new_session=True)
    watch = MemoryWatch(hog.pid, 0.2)
    try:
        hog.wait(timeout=30)
    finally:
        kill_all(hog.pid)
        watch.stop()
    assert watch.over and watch.peak > 0.2 * (1 << 30)
    time.sleep(0.5)
    assert [pid for pid in processes_of(hog.pid) if pid_alive(pid)] == []  # the sleeping child too


@pytest.mark.slow
@pytest.mark.usefixtures("slurm_cluster")
def test_on_slurm_each_submission_is_a_job_and_the_grader_keeps_the_store(tmp_path, store):
    """In a process of its own: submitit binds its log handlers to the sys.stdout it first sees (pytest's)."""
    data = fashion_layout(tmp_path, n_train=200, n_test=60)
    expected = write_class(tmp_path / "all")
    for student in ("anna", "fay"):
        (tmp_path / "class").mkdir(exist_ok=True)
        (tmp_path / "all" / f"{student}.py").rename(tmp_path / "class" / f"{student}.py")
    done = subprocess.run([sys.executable, "-m", "nnlab", "course", "grade", str(tmp_path / "class"), str(data),
                           "--lab", "exer_2", "--jobs", "2", "--launcher", "slurm", *LIMITS, "--uri", store, "--out",
                           "grades"], cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table(tmp_path / "grades", "exer_2")
    for student in ("anna", "fay"):
        verdict, reason = expected[student]
        assert rows[student]["verdict"] == verdict and reason in rows[student]["reason"], rows[student]
    runs = course_runs(store)
    assert runs["anna"].data.tags["slurm_job_id"] != runs["fay"].data.tags["slurm_job_id"]
    assert runs["anna"].data.metrics["test_accuracy"] >= 0.87  # sent by the grader from the job's outbox
    assert "passed 1 of 2; 1 could not be scored" in done.stdout


def test_on_the_team_server_a_students_graded_run_is_theirs_to_read_and_nobody_elses(tracking_server, nnlab_cli,
                                                                                     tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NNLAB_OUTBOX_DIR", str(tmp_path / "outbox"))
    data = fashion_layout(tmp_path, n_train=200, n_test=60)
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "alice.py").write_text(variant(12))
    (tmp_path / "class" / "carol.py").write_text(variant(12))  # no account: the teacher's own experiment
    tracking_server.sign_in(monkeypatch, "teach")
    code, out, err = nnlab_cli("course", "grade", str(tmp_path / "class"), str(data), "--lab", "exer_2", *LIMITS,
                               "--out", "grades")
    assert code == 0, err
    assert "passed 2 of 2" in out
    teacher = MlflowClient(tracking_server.url)
    graded = {e.name: teacher.search_runs([e.experiment_id]) for e in teacher.search_experiments()
              if e.name in ("alice/course", "teach/course")}
    assert [r.data.tags["course.student"] for r in graded["alice/course"]] == ["alice"]
    assert "carol" in [r.data.tags["course.student"] for r in graded["teach/course"]]
    tracking_server.sign_in(monkeypatch, "alice")
    (run,) = MlflowClient(tracking_server.url).search_runs(
        [MlflowClient(tracking_server.url).get_experiment_by_name("alice/course").experiment_id])
    assert run.data.tags["course.verdict"] == "PASS" and run.data.metrics["test_accuracy"] >= 0.87
    tracking_server.sign_in(monkeypatch, "bob")
    bob = MlflowClient(tracking_server.url)
    assert "alice/course" not in [e.name for e in bob.search_experiments()]
    with pytest.raises(MlflowException, match="Permission denied"):
        bob.get_run(run.info.run_id)


def test_a_grader_stopped_mid_class_kills_the_running_script_and_ends_its_run_killed(tmp_path, store):
    data = fashion_layout(tmp_path, n_train=60, n_test=30)
    write_class(tmp_path / "all")
    (tmp_path / "class").mkdir()
    (tmp_path / "all" / "gus.py").rename(tmp_path / "class" / "gus.py")  # loops for ever in load_train
    grader = subprocess.Popen([sys.executable, "-m", "nnlab", "course", "grade", str(tmp_path / "class"), str(data),
                               "--lab", "exer_2", "--uri", store, "--out", str(tmp_path / "grades")], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stage = tmp_path / "grades/work/gus/stage"
    deadline = time.monotonic() + 120
    while not (stage.exists() and "load_train" in stage.read_text()) and time.monotonic() < deadline:
        time.sleep(0.5)
    grader.terminate()
    _, err = grader.communicate(timeout=60)
    assert grader.returncode == 130 and "interrupted (stopped by SIGTERM)" in err
    assert graders_workers(tmp_path / "grades") == []
    (run,) = course_runs(store).values()
    assert run.info.status == "KILLED" and "grading was interrupted" in run.data.tags["course.reason"]


@pytest.mark.parametrize(("flag", "left_out"), [("--jobs", "one at a time"), ("--memory-gb", "80% of this machine"),
                                                ("--wall-minutes", "twice the training budget")])
def test_a_limit_below_one_is_one_sentence_saying_what_leaving_it_out_means(nnlab_cli, tmp_path, flag, left_out):
    code, out, err = nnlab_cli("course", "grade", str(tmp_path), str(tmp_path), "--lab", "exer_2", flag, "0")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{flag} must be positive, not 0; leave it out for {left_out}" in err
    assert not list(tmp_path.iterdir())  # nothing graded, nothing written
