"""Accounts on a tracking server: whose experiment a job logs to, and no password of a URL in what is recorded."""

from nnlab.tracking.accounts import account, own_experiment, redact


def test_redact_removes_user_and_password_from_every_url_in_a_text():
    text = "tracking.uri=http://alice:s3cr%40t@host:5000/x and https://bob@h/ and sqlite:///a.db"
    assert redact(text) == "tracking.uri=http://host:5000/x and https://h/ and sqlite:///a.db"


def test_a_servers_job_logs_to_the_accounts_own_experiment_and_a_local_store_to_the_name(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    assert own_experiment("http://h:5000", "fashion_mnist") == "alice/fashion_mnist"
    assert own_experiment("http://h:5000", "alice/fashion_mnist") == "alice/fashion_mnist"
    assert own_experiment("http://h:5000", "bob/x") == "alice/bob/x"  # nobody writes into another's name
    assert own_experiment("sqlite:///m.db", "fashion_mnist") == "fashion_mnist"
    assert account("http://carol:pw@h:5000") == "carol"  # a URL's own user comes first
