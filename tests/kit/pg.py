"""Helpers for the PostgreSQL endpoint tests (no tests here): a served store and the real clients.

Clients are the real programs: ``psql`` (Debian's postgresql-client), psycopg, Go's pgx (built from
``tests/serve/pgwire/clients/pgx`` with its module cache under ``.cache/go``) and the PostgreSQL JDBC driver
(fetched with Maven into ``.cache/jars/pgjdbc``, run from a single-file Java program).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest

from sensorstream.config import Settings
from sensorstream.serve.pgwire import PgServer

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "tests" / "serve" / "pgwire" / "clients"
PASSWORD = "s3cret-for-tests"


def pg_settings(make_settings, **overrides: Any) -> Settings:
    return make_settings(pg_password=PASSWORD, **overrides)


@contextmanager
def endpoint(con: duckdb.DuckDBPyConnection, settings: Settings, **kwargs: Any) -> Iterator[PgServer]:
    server = PgServer(con, settings, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def conninfo(server: PgServer, settings: Settings, password: str = PASSWORD) -> str:
    return (
        f"host={server.host} port={server.port} user={settings.pg_user} password={password} "
        "dbname=sensorstream connect_timeout=10"
    )


def url(server: PgServer, settings: Settings) -> str:
    return f"postgres://{settings.pg_user}:{PASSWORD}@{server.host}:{server.port}/sensorstream"


# --- psql -------------------------------------------------------------------------------------------
def psql(
    server: PgServer, settings: Settings, *commands: str, password: str = PASSWORD
) -> subprocess.CompletedProcess:
    exe = shutil.which("psql")
    if exe is None:
        pytest.skip("psql is not installed (make test installs postgresql-client when run as root)")
    args = [exe, "-X", "-v", "ON_ERROR_STOP=1", "-h", server.host, "-p", str(server.port)]
    args += ["-U", settings.pg_user, "-d", "sensorstream"]
    for command in commands:
        args += ["-c", command]
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)


# --- Go pgx -----------------------------------------------------------------------------------------
def go_env() -> dict[str, str]:
    # Go's own module and build caches (go env GOMODCACHE GOCACHE), as for any Go build: a fresh
    # clone then builds the client from them in a second or two; caches inside the clone made
    # every clone download pgx and compile it again (21 s of each `make test`). Go's caches are
    # keyed by content, so a changed go.mod or main.go is still fetched and compiled.
    return {**os.environ, "GOFLAGS": "-modcacherw"}


def build_pgx(target: Path) -> Path:
    """The pgx client program, built once (modules come from the Go module proxy the first time)."""
    if shutil.which("go") is None:
        pytest.skip("Go is not installed: the pgx client test needs `go`")
    binary = target / "pgxcheck"
    subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=CLIENTS / "pgx",
        env=go_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    return binary


def run_pgx(binary: Path, request: dict[str, Any]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(binary)], input=json.dumps(request), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --- pgJDBC -----------------------------------------------------------------------------------------
def run_jdbc(server: PgServer, settings: Settings, *args: str, program: str = "JdbcCheck") -> list[list[str]]:
    from sensorstream.jvm.classpath import ensure_jars, java_binary

    jars = ensure_jars(ROOT / ".cache", "pgjdbc", pom=CLIENTS / "jdbc" / "pom.xml")
    jdbc_url = f"jdbc:postgresql://{server.host}:{server.port}/sensorstream"
    done = subprocess.run(
        [
            java_binary(),
            "-cp",
            os.pathsep.join(str(j) for j in jars),
            str(CLIENTS / "jdbc" / f"{program}.java"),
            jdbc_url,
            settings.pg_user,
            PASSWORD,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]
