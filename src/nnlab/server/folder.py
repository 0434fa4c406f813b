"""The server's folder: where PostgreSQL's data, the artifacts, the logs and the secrets live, and the state of a
started server (`server.json`: ports and process ids, no secrets).

Secrets are files readable by their owner only, in a folder only its owner can enter: the admin's password, the
database password (as a libpq password file, so no password is ever on a command line, which every user of the
machine can read with `ps`) and MLflow's auth config."""

import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from nnlab.errors import NnlabError

ADMIN = "admin"  # MLflow basic-auth's admin account, created by the server on its first start
DB_USER = "nnlab"  # PostgreSQL's role for MLflow's two databases
TRACKING_DB, AUTH_DB = "mlflow", "mlflow_auth"


@dataclass
class State:
    """What runs where: written once both processes answer, removed by `stop`."""
    url: str
    host: str
    port: int
    pg_port: int
    mlflow_pid: int
    workers: int


class ServerDir:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.secrets = self.root / "secrets"
        self.postgres = self.root / "postgres"  # owned by PostgreSQL's user; its data folder is `pgdata`
        self.pgdata = self.postgres / "data"
        self.artifacts = self.root / "artifacts"
        self.logs = self.root / "logs"
        self.state_file = self.root / "server.json"

    def create(self) -> None:
        """The folder (0711: PostgreSQL's user may pass through, nobody may list it) and its parts; one sentence
        where it belongs to someone else."""
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.check_owner()
        for folder, mode in ((self.secrets, 0o700), (self.artifacts, 0o700), (self.logs, 0o700)):
            folder.mkdir(mode=mode, exist_ok=True)
            os.chmod(folder, mode)

    def check_owner(self) -> None:
        owner = self.root.stat().st_uid
        if owner != os.getuid():
            raise NnlabError(f"The server folder {self.root} belongs to another user (uid {owner}); start the server "
                             "as that user, or choose a folder of your own.")

    def secret(self, name: str, create: bool = False) -> str:
        """The secret `name` (made of random characters on first use when `create`)."""
        path = self.secrets / name
        if path.is_file():
            return path.read_text().strip()
        if not create:
            raise NnlabError(f"{path} is missing; the server in {self.root} was never started (`nnlab server start "
                             f"{self.root}`), or its secrets were removed.")
        value = secrets.token_urlsafe(18)
        self.write_secret(name, value + "\n")
        return value

    def write_secret(self, name: str, text: str) -> Path:
        path = self.secrets / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    def state(self) -> State | None:
        try:
            return State(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save_state(self, state: State) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
        os.replace(tmp, self.state_file)

    def forget_state(self) -> None:
        self.state_file.unlink(missing_ok=True)
