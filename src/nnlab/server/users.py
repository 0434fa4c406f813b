"""Accounts on the server, made through MLflow's basic-auth REST API with the admin's password from the server's
folder. A student owns the experiments they create (MANAGE) and sees nobody else's; a teacher is an MLflow admin,
who reads every student's runs."""

import secrets
from pathlib import Path

from nnlab.errors import NnlabError
from nnlab.server.folder import ADMIN, ServerDir
from nnlab.server.service import ADMIN_PASSWORD, running_state

MIN_PASSWORD = 8


def admin_session(root: str | Path):
    """(server URL, a requests session signed in as the admin)."""
    import requests

    folder = ServerDir(root)
    state = running_state(folder)
    if state is None:
        raise NnlabError(f"No server runs from {folder.root}; start it with `nnlab server start {folder.root}`.")
    session = requests.Session()
    session.auth = (ADMIN, folder.secret(ADMIN_PASSWORD))
    return state.url, session


def read_password(password_file: str | None) -> tuple[str, bool]:
    """(the password, whether it was made here)."""
    if password_file is None:
        return secrets.token_urlsafe(12), True
    try:
        password = Path(password_file).read_text().strip()
    except OSError as err:
        raise NnlabError(f"Cannot read the password file {password_file} ({err.strerror}); name a readable file.") \
            from None
    if len(password) < MIN_PASSWORD:
        raise NnlabError(f"The password in {password_file} is shorter than {MIN_PASSWORD} characters; choose a "
                         "longer one.")
    return password, False


def add_user(root: str | Path, name: str, teacher: bool = False, password_file: str | None = None) -> str | None:
    """Create the account; returns its password where nnlab made it (to be shown once), else None."""
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise NnlabError(f"User name '{name}' is not allowed; use letters, digits, '.', '-' and '_'.")
    password, made = read_password(password_file)
    url, session = admin_session(root)
    answer = session.post(f"{url}/api/2.0/mlflow/users/create", json={"username": name, "password": password},
                          timeout=30)
    if answer.status_code != 200:
        raise NnlabError(f"The server refused to create user '{name}': {refusal(answer)}.")
    if teacher:
        answer = session.patch(f"{url}/api/2.0/mlflow/users/update-admin", json={"username": name, "is_admin": True},
                               timeout=30)
        if answer.status_code != 200:
            raise NnlabError(f"User '{name}' was created but not made a teacher: {refusal(answer)}.")
    return password if made else None


def refusal(answer) -> str:
    """The server's reason, its first sentence only: MLflow appends the failed SQL, with the password's hash."""
    try:
        message = answer.json().get("message") or ""
    except ValueError:
        message = ""
    return message.split(" Error: ")[0].splitlines()[0].rstrip(".") if message else f"HTTP {answer.status_code}"
