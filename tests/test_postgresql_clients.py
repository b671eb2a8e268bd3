"""Real PostgreSQL clients against `tarry serve`: psql, psycopg and patator's
pgsql_login go through SSLRequest and startup, send their password, and get
"password authentication failed" only after it drips; a client with no
connect_timeout stays, one with a connect_timeout is held to it."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from db_support import close_line, held_program, patator, start_two_speeds
from support import need, need_module, start_tarry

pytestmark = pytest.mark.realclient


@pytest.fixture(scope="module")
def tarry(tmp_path_factory):
    t = start_two_speeds("postgresql", tmp_path_factory.mktemp("state"))
    yield t
    t.stop()


def psql_env(password: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return {**env, "PGPASSWORD": password, **extra}


def psql(port: int, user: str, db: str) -> list[str]:
    return [need("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", db, "-w"]


def test_psql_denied_and_recorded(tarry):
    argv = [*psql(tarry.port("postgresql", 0), "pgadmin", "billing"), "-c", "select 1"]
    got = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=psql_env("pg-secret")
    )
    assert got.returncode == 2
    assert 'password authentication failed for user "pgadmin"' in got.stderr, got.stderr
    line = close_line(tarry, "postgresql", r"auth_pass=pg-secret")
    assert " auth_user=pgadmin" in line and " database=billing" in line
    assert " application_name=psql" in line and " reason=bait" in line


def test_psql_without_connect_timeout_stays(tarry):
    argv = [*psql(tarry.port("postgresql", 1), "slow", "slow"), "-c", "select 1"]
    held_program(argv, psql_env("slow"))
    line = close_line(tarry, "postgresql", r"reason=(closed|reset) .*auth_user=slow( |$)")
    assert int(re.search(r" bytes=(\d+)", line).group(1)) >= 20  # the denial was dripping


def test_psycopg_denied_and_recorded(tarry):
    psycopg = need_module("psycopg")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1",
            port=tarry.port("postgresql", 0),
            user="pyuser",
            password="py-secret",
            dbname="app",
            application_name="worker-7",
        )
    line = close_line(tarry, "postgresql", r"auth_pass=py-secret")
    assert " application_name=worker-7" in line and " database=app" in line


def test_psycopg_held_to_its_connect_timeout(tarry):
    """libpq's connect_timeout bounds the whole startup: held to it exactly."""
    psycopg = need_module("psycopg")
    start = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1", port=tarry.port("postgresql", 1), user="timed", password="x",
            connect_timeout=2,
        )  # fmt: skip
    assert time.monotonic() - start >= 1.9
    line = close_line(tarry, "postgresql", r"auth_user=timed ")
    assert float(re.search(r" time=(\d+\.\d+)", line).group(1)) >= 1.8


def test_patator_pgsql_login_100_credentials(tarry, tmp_path):
    out = patator("pgsql_login", tarry.port("postgresql", 0), "postgres", tmp_path)
    assert out.count("password authentication failed") >= 100, out[-2000:]
    for i in (0, 57, 99):
        close_line(tarry, "postgresql", rf"auth_pass=pw{i:03d}( |$)")


def test_patator_password_recorded_at_the_default_delay(tmp_path):
    """At the default 10 s delay, patator's 10 s libpq deadline ends each try,
    but only after the password was sent and recorded."""
    t = start_tarry('[[tarpit]]\nprotocol = "postgresql"\nlisten = ["127.0.0.1:0"]\n')
    try:
        argv = [
            need("patator"), "pgsql_login", "host=127.0.0.1", f"port={t.port('postgresql')}",
            "user=postgres", "password=FILE0", "0=" + str(tmp_path / "pw.txt"),
            "-t", "3", "--max-retries", "0",
        ]  # fmt: skip
        (tmp_path / "pw.txt").write_text("alpha\nbravo\ncharlie\n")
        start = time.monotonic()
        subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert time.monotonic() - start >= 8.9  # held to its deadline (whole seconds: 9-10 s)
        for pw in ("alpha", "bravo", "charlie"):
            line = close_line(t, "postgresql", rf"auth_pass={pw}( |$)", timeout=5)
            assert float(re.search(r" time=(\d+\.\d+)", line).group(1)) >= 8.9, line
    finally:
        t.stop()
