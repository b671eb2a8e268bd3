"""A throwaway PostgreSQL server from Debian's packages, for the fleet tests.

``PgServer`` runs ``initdb`` into a temporary directory and starts the
postmaster itself (not via pg_ctl, so the PID it stops is the one it started),
listening on 127.0.0.1 at a free port and on a Unix socket in that directory.
PostgreSQL refuses to run as root: as root the server runs as the ``postgres``
user (or ``nobody``) through ``setpriv``, which execs, so the PID stays the
server's.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from support import IN_CI, free_port, need_module


def pg_bindir() -> str | None:
    """The newest installed server's bin directory (Debian keeps it off PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return str(Path(found[-1]).parent) if found else None


def need_pg() -> str:
    """The server's bin directory and the driver; skip locally without them, fail in CI."""
    need_module("psycopg")
    bindir = pg_bindir()
    if bindir is None:
        if IN_CI:
            pytest.fail("PostgreSQL is not installed (Debian: postgresql), and CI must not skip")
        pytest.skip("PostgreSQL server binary not found (Debian: postgresql)")
    return bindir


class PgServer:
    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.port = free_port()
        # under /tmp as root: the server's user must reach it, whatever TMPDIR is
        where = "/tmp" if os.geteuid() == 0 else None
        self.base = Path(tempfile.mkdtemp(prefix="tarry-pg-", dir=where))
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.sock.mkdir()
        self.log = self.base / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = "postgres"
            try:
                pw = pwd.getpwnam(user)
            except KeyError:
                user, pw = "nobody", pwd.getpwnam("nobody")
            for p in (self.base, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self.prefix = [
                "setpriv",
                f"--reuid={pw.pw_uid}",
                f"--regid={pw.pw_gid}",
                "--clear-groups",
                "--",
            ]
        subprocess.run(
            [
                *self.prefix,
                f"{bindir}/initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.base,
        )

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *self.prefix,
                    f"{self.bindir}/postgres",
                    "-D",
                    str(self.data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.sock),
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "shared_buffers=16MB",
                    "-c",
                    "max_connections=40",
                ],
                stdout=log,
                stderr=log,
                cwd=self.base,
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        psycopg = need_module("psycopg")
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"postgres exited: {self.log.read_text()[-2000:]}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"postgres not ready in {timeout}s") from None
                time.sleep(0.05)

    def stop(self, how: int = signal.SIGINT, timeout: float = 30.0) -> None:
        """SIGINT is a fast shutdown (clients cut off), SIGQUIT an immediate one."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(how)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def create_db(self, name: str) -> str:
        psycopg = need_module("psycopg")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, db: str, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
        psycopg = need_module("psycopg")
        with psycopg.connect(self.url(db), autocommit=True) as conn:
            return conn.execute(sql, args).fetchall()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
