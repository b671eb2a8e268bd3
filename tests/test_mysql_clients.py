"""Real MySQL clients against `tarry serve`: the mariadb client, PyMySQL and
patator's mysql_login read our greeting, send their password in clear when
asked, get "Access denied", and are held past their connect_timeout while the
greeting drips; what they say shows up in the CLOSE line."""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest

from support import end_process, need, need_module, start_tarry

pytestmark = pytest.mark.realclient

FAST, SLOW = 0.002, 0.2

CONFIG = f"""
[[tarpit]]
protocol = "mysql"
listen = ["127.0.0.1:0"]
delay = {FAST}
max_clients_per_ip = 0

[[tarpit]]
protocol = "mysql"
listen = ["127.0.0.1:0"]
delay = {SLOW}
"""


@pytest.fixture(scope="module")
def tarry(tmp_path_factory):
    t = start_tarry(CONFIG, env={"XDG_STATE_HOME": str(tmp_path_factory.mktemp("state"))})
    t.port("mysql")
    yield t
    t.stop()


def close_line(tarry, pattern: str, timeout: float = 20.0) -> str:
    return tarry.wait_for(rf" CLOSE proto=mysql .*{pattern}", timeout).string


def mariadb(port: int, *args: str) -> list[str]:
    return [need("mariadb"), "--no-defaults", "-h", "127.0.0.1", "-P", str(port), *args]


def test_mariadb_client_denied_and_recorded(tarry):
    argv = mariadb(tarry.port("mysql", 0), "-u", "dbadmin", "-pmaria-secret", "-D", "shop")
    got = subprocess.run([*argv, "-e", "select 1"], capture_output=True, text=True, timeout=60)
    assert got.returncode == 1
    assert "ERROR 1045 (28000): Access denied for user 'dbadmin'@" in got.stderr, got.stderr
    line = close_line(tarry, r"auth_pass=maria-secret")
    assert " auth_user=dbadmin" in line and " database=shop" in line
    assert re.search(r" client=mysql/\d", line) and "_client_name\\x3dlibmariadb" in line
    assert " reason=bait" in line  # denied at the end of the drip: the client never gave up


def test_mariadb_held_past_connect_timeout(tarry):
    """libmariadb's connect_timeout covers the greeting's first byte only."""
    argv = mariadb(tarry.port("mysql", 1), "--connect-timeout=1", "-u", "slow", "-pslow")
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        time.sleep(20 * SLOW)  # four times its connect_timeout
        assert proc.poll() is None, proc.communicate()
    finally:
        end_process(proc)
    line = close_line(tarry, r"reason=(closed|reset)")
    assert int(re.search(r" bytes=(\d+)", line).group(1)) >= 15  # the greeting was dripping


def test_pymysql_denied_and_recorded(tarry):
    pymysql = need_module("pymysql")
    with pytest.raises(pymysql.err.OperationalError) as e:
        pymysql.connect(
            host="127.0.0.1", port=tarry.port("mysql", 0), user="pyuser", password="py-secret"
        )
    assert e.value.args[0] == 1045
    line = close_line(tarry, r"auth_pass=py-secret")
    assert " auth_user=pyuser" in line and "_client_name\\x3dpymysql" in line


def test_pymysql_held_past_connect_timeout(tarry):
    """PyMySQL's connect_timeout (10 s by default) bounds the TCP connect only."""
    pymysql = need_module("pymysql")
    failed: list[BaseException] = []

    def connect() -> None:
        try:
            pymysql.connect(
                host="127.0.0.1", port=tarry.port("mysql", 1), user="u", connect_timeout=1
            )
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    time.sleep(20 * SLOW)
    assert thread.is_alive() and not failed, failed  # it ends when tarry stops


def test_patator_mysql_login_100_credentials(tarry, tmp_path):
    need("patator")
    passwords = tmp_path / "passwords.txt"
    passwords.write_text("".join(f"pw{i:03d}\n" for i in range(100)))
    argv = [
        need("patator"), "mysql_login", "host=127.0.0.1", f"port={tarry.port('mysql', 0)}",
        "user=root", "password=FILE0", f"0={passwords}", "-t", "10", "--max-retries", "0",
    ]  # fmt: skip
    got = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert got.stdout.count("Access denied") + got.stderr.count("Access denied") >= 100, got
    for i in (0, 57, 99):
        close_line(tarry, rf"auth_pass=pw{i:03d}( |$)")
