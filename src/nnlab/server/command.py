"""`nnlab server start|stop|status|add-user DIR`: a team tracking server for a class (README, "A class on one
server")."""

import argparse
import sys

from nnlab.server import service, users


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="nnlab server", description="A team tracking server: PostgreSQL and an "
                                  "MLflow server with accounts, its data, artifacts and secrets in one folder.")
    sub = top.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="start PostgreSQL and the MLflow server (the folder is created on the "
                           "first start, with the admin's password in DIR/secrets/admin_password)")
    start.add_argument("dir")
    start.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every one; default "
                       "127.0.0.1)")
    start.add_argument("--port", type=int, default=5000, help="the MLflow server's port (default 5000)")
    start.add_argument("--workers", type=int, default=4, help="MLflow server processes (default 4)")
    for name, text in (("stop", "stop both; no process is left behind"), ("status", "what runs where")):
        sub.add_parser(name, help=text).add_argument("dir")
    add = sub.add_parser("add-user", help="create an account: a random password is printed once, or the one in "
                         "--password-file is used")
    add.add_argument("dir")
    add.add_argument("name")
    add.add_argument("--teacher", action="store_true", help="an MLflow admin: reads every student's runs")
    add.add_argument("--password-file", help="a file holding the password (at least 8 characters)")
    return top


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.action == "start":
        state = service.start(args.dir, args.host, args.port, args.workers)
        print(f"nnlab: tracking server at {state.url} (PostgreSQL on 127.0.0.1:{state.pg_port}); the admin's password "
              f"is in {service.ServerDir(args.dir).secrets / service.ADMIN_PASSWORD}. Add accounts with `nnlab "
              f"server add-user {args.dir} NAME`; clients set MLFLOW_TRACKING_URI={state.url} and "
              "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD.")
    elif args.action == "stop":
        print(f"nnlab: {service.stop(args.dir)}")
    elif args.action == "status":
        ok, text = service.status(args.dir)
        print(f"nnlab: {text}")
        sys.exit(0 if ok else 1)
    else:
        password = users.add_user(args.dir, args.name, args.teacher, args.password_file)
        role = "teacher" if args.teacher else "student"
        shown = f"; password (shown once): {password}" if password else " with the password from the file"
        print(f"nnlab: {role} '{args.name}' created{shown}")
