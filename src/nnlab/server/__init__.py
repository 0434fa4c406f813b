"""`nnlab server`: a team tracking server for a class, from Debian's PostgreSQL and PyPI's MLflow only.

One folder holds everything (`folder.ServerDir`): PostgreSQL's data (run by a non-root user where nnlab is root),
the proxied artifacts, the logs, and the secrets (0600 files in a 0700 folder). `service` starts and stops the two
processes, `postgres` drives PostgreSQL's own tools, `users` makes accounts through MLflow's basic-auth REST API.
"""
