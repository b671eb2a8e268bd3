"""Real Redis clients against `tarry serve`: redis-cli and redis-py read our
dripped replies as Redis's, are held while they drip (a byte resets their
per-read timeout), and what they send shows up in the CLOSE line."""

from __future__ import annotations

import io
import json
import re
import subprocess

import pytest

from db_support import SLOW, close_line, held_call, held_program, start_two_speeds
from support import need, need_module, wait_until
from tarry.report import report_main

pytestmark = pytest.mark.realclient


@pytest.fixture(scope="module")
def tarry(tmp_path_factory):
    t = start_two_speeds("redis", tmp_path_factory.mktemp("state"))
    yield t
    t.stop()


def report(db) -> dict:
    out, err = io.StringIO(), io.StringIO()
    assert report_main(["--db", str(db), "--format", "json"], out=out, err=err) == 0, err
    return json.loads(out.getvalue())


def cli(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [need("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_redis_cli_config_get_and_auth(tarry):
    port = tarry.port("redis", 0)
    got = cli(port, "CONFIG", "GET", "dbfilename")
    assert got.stdout.split() == ["dbfilename", "dump.rdb"], got
    close_line(tarry, "redis", r"command=CONFIG\\x20GET")
    got = cli(port, "--user", "admin", "--pass", "cli-secret", "--no-auth-warning", "PING")
    assert "WRONGPASS" in got.stdout + got.stderr, got
    line = close_line(tarry, "redis", r"auth_pass=cli-secret")
    assert " auth_user=admin" in line


def test_redis_cli_held_by_info(tarry):
    """INFO drips a byte a delay; redis-cli (no read timeout) waits for it all."""
    port = tarry.port("redis", 1)
    held_program([need("redis-cli"), "-h", "127.0.0.1", "-p", str(port), "INFO"])
    line = close_line(tarry, "redis", r"command=INFO")
    assert " reason=closed" in line
    assert int(re.search(r" bytes=(\d+)", line).group(1)) >= 10  # it was progressing


def test_redis_py_info_and_setinfo(tarry):
    redis = need_module("redis")
    r = redis.Redis(host="127.0.0.1", port=tarry.port("redis", 0))
    info = r.info()
    assert info["redis_version"] == "7.2.4" and info["role"] == "master"
    r.close()
    line = close_line(tarry, "redis", r"client=redis-py")
    assert " command=INFO" in line


def test_redis_py_auth_recorded(tarry):
    redis = need_module("redis")
    r = redis.Redis(host="127.0.0.1", port=tarry.port("redis", 0), password="py-secret")
    with pytest.raises(redis.exceptions.AuthenticationError):
        r.ping()
    close_line(tarry, "redis", r"auth_user=default auth_pass=py-secret")


def test_redis_py_socket_timeout_never_fires(tarry):
    """redis-py times each read (5 s by default); a byte every delay keeps it reading."""
    redis = need_module("redis")
    r = redis.Redis(host="127.0.0.1", port=tarry.port("redis", 1), socket_timeout=4 * SLOW)
    held_call(r.info)  # for many times its read timeout


def test_report_shows_commands_and_credentials(tarry):
    """The notes feed the history and `tarry report` as SSH's credentials do."""
    port = tarry.port("redis", 0)
    cli(port, "--user", "reportuser", "--pass", "report-pw", "--no-auth-warning", "PING")
    cli(port, "SLAVEOF", "203.0.113.9", "8886")

    def found() -> dict | None:
        data = report(tarry.history)
        creds = {(r["proto"], r["user"], r["password"]) for r in data["top_credentials"]}
        commands = {r["command"] for r in data["top_commands"]}
        ok = ("redis", "reportuser", "report-pw") in creds and "SLAVEOF" in commands
        return data if ok else None

    wait_until(found, 20, "the redis sessions in the report")
