"""Real MySQL clients against `tarry serve`: the mariadb client, PyMySQL and
patator's mysql_login read our greeting, send their password in clear when
asked, get "Access denied", and are held past their connect_timeout while the
greeting drips; what they say shows up in the CLOSE line."""

from __future__ import annotations

import re
import subprocess

import pytest

from db_support import close_line, held_call, held_program, patator, start_two_speeds
from support import need, need_module

pytestmark = pytest.mark.realclient


@pytest.fixture(scope="module")
def tarry(tmp_path_factory):
    t = start_two_speeds("mysql", tmp_path_factory.mktemp("state"))
    yield t
    t.stop()


def mariadb(port: int, *args: str) -> list[str]:
    return [need("mariadb"), "--no-defaults", "-h", "127.0.0.1", "-P", str(port), *args]


def test_mariadb_client_denied_and_recorded(tarry):
    argv = mariadb(tarry.port("mysql", 0), "-u", "dbadmin", "-pmaria-secret", "-D", "shop")
    got = subprocess.run([*argv, "-e", "select 1"], capture_output=True, text=True, timeout=60)
    assert got.returncode == 1
    assert "ERROR 1045 (28000): Access denied for user 'dbadmin'@" in got.stderr, got.stderr
    line = close_line(tarry, "mysql", r"auth_pass=maria-secret")
    assert " auth_user=dbadmin" in line and " database=shop" in line
    assert re.search(r" client=mysql/\d", line) and "_client_name\\x3dlibmariadb" in line
    assert " reason=bait" in line  # denied at the end of the drip: the client never gave up


def test_mariadb_held_past_connect_timeout(tarry):
    """libmariadb's connect_timeout is per read: a byte every delay resets it."""
    held_program(mariadb(tarry.port("mysql", 1), "--connect-timeout=1", "-u", "slow", "-pslow"))
    line = close_line(tarry, "mysql", r"reason=(closed|reset)$")  # no notes: in the greeting
    assert int(re.search(r" bytes=(\d+)", line).group(1)) >= 15  # the greeting was dripping


def test_pymysql_denied_and_recorded(tarry):
    pymysql = need_module("pymysql")
    with pytest.raises(pymysql.err.OperationalError) as e:
        pymysql.connect(
            host="127.0.0.1", port=tarry.port("mysql", 0), user="pyuser", password="py-secret"
        )
    assert e.value.args[0] == 1045
    line = close_line(tarry, "mysql", r"auth_pass=py-secret")
    assert " auth_user=pyuser" in line and "_client_name\\x3dpymysql" in line


def test_pymysql_held_past_connect_timeout(tarry):
    """PyMySQL's connect_timeout (10 s by default) bounds the TCP connect only."""
    pymysql = need_module("pymysql")
    port = tarry.port("mysql", 1)
    held_call(lambda: pymysql.connect(host="127.0.0.1", port=port, user="u", connect_timeout=1))


def test_patator_mysql_login_100_credentials(tarry, tmp_path):
    out = patator("mysql_login", tarry.port("mysql", 0), "root", tmp_path)
    assert out.count("Access denied") >= 100, out[-2000:]
    for i in (0, 57, 99):
        close_line(tarry, "mysql", rf"auth_pass=pw{i:03d}( |$)")
