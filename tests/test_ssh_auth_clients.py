"""The SSH ``auth`` mode against real clients, through a real ``tarry serve``.

Each client completes the key exchange (it accepts our ed25519 host key, whose
signature it checks), is refused every password just inside its family's wait
(scaled down here by ``auth_share``), and the CLOSE line names the user and
the passwords tried. One tarry serves every client, one listener each, under
``adaptive`` (so the family table picks the mode and the wait), but OpenSSH's
under ``auth``: adaptive gives OpenSSH ``kex`` until its address has shown a
deadline, which the last test shows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import IN_CI, Tarry, need, need_module, start_tarry, wait_until
from tarry.sshwire import frame, kexinit_payload, read_packet

pytestmark = pytest.mark.realclient

SHARE = 0.05  # of each family's wait: paramiko 30 s -> 1.5 s, libssh 32 s -> 1.6 s
AUTH_WAIT = 1.0  # families with no wait of their own: OpenSSH, libssh2
SLACK = 2.5  # seconds a loaded machine may add to a planned refusal

CLIENTS = ("paramiko", "openssh", "asyncssh", "libssh", "libssh2")

LISTENER = """
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]
delay = 0.5
mode = "{mode}"
auth_share = {share}
auth_margin = 0
auth_wait = {wait}
"""


@pytest.fixture(scope="module")
def tarry() -> Iterator[Tarry]:
    config = "".join(
        LISTENER.format(mode="auth" if c == "openssh" else "adaptive", share=SHARE, wait=AUTH_WAIT)
        for c in CLIENTS
    )
    t = start_tarry(config)
    try:
        wait_until(lambda: t.count("LISTEN proto=ssh") == len(CLIENTS), 10, "listeners")
        yield t
    finally:
        t.stop()


def port_of(t: Tarry, client: str) -> int:
    return t.port("ssh", CLIENTS.index(client))


def closes(t: Tarry, port: int, n: int, timeout: float = 10.0) -> list[str]:
    """The first ``n`` CLOSE lines of the listener on ``port``."""
    rx = re.compile(rf"CLOSE .*listener=127\.0\.0\.1:{port} ")
    wait_until(lambda: t.count(rx.pattern) >= n, timeout, f"{n} CLOSE lines")
    return [line for line in t.lines if rx.search(line)][:n]


def note(line: str, key: str) -> str:
    """A peer value from the endlessh line, decoded as the README says (one bare
    token whose escapes ``codecs.decode(v, "unicode_escape")`` undoes)."""
    import codecs

    m = re.search(rf" {key}=(\S*)", line)
    assert m, f"no {key} in {line}"
    value = m.group(1)
    return "" if value == '""' else codecs.decode(value, "unicode_escape")


def test_paramiko_is_refused_each_password_at_its_share_of_30s(tarry: Tarry) -> None:
    paramiko = need_module("paramiko")
    port = port_of(tarry, "paramiko")
    passwords = ["123456", "password", "admin", "root", "qwerty"]
    keys = set()
    for pw in passwords:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        start = time.monotonic()
        with pytest.raises(paramiko.AuthenticationException):
            client.connect(
                "127.0.0.1", port, "root", pw, look_for_keys=False, allow_agent=False, timeout=10
            )
        took = time.monotonic() - start
        keys.add(client.get_transport().get_remote_server_key().get_base64())
        client.close()
        assert SHARE * 30 - 0.1 <= took <= SHARE * 30 + SLACK, took
    assert len(keys) == 1  # one host key, and an ed25519 one
    lines = closes(tarry, port, len(passwords))
    for pw, line in zip(passwords, lines, strict=True):
        assert " family=paramiko " in line and " mode=auth " in line
        assert " auth=exchanged " in line and " auth_user=root " in line
        assert f" auth_pass={pw} " in line and " auth_tries=1 " in line


def openssh(port: int, tmp_path: Path, prompts: int = 3) -> tuple[list[str], dict[str, str]]:
    """``ssh`` answering each password prompt (through SSH_ASKPASS) with
    secret1, secret2, ...; under setsid, so it has no terminal to ask on."""
    ssh = need("ssh")
    setsid = need("setsid")
    count = tmp_path / "n"
    askpass = tmp_path / "askpass"
    askpass.write_text(
        f"#!/bin/sh\nn=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}\n"
        'echo "secret$n"\n'
    )
    askpass.chmod(0o700)
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    env["DISPLAY"] = env.get("DISPLAY", ":0")
    argv = [setsid, "-w", ssh, "-F", "/dev/null", "-p", str(port)]
    argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    argv += ["-o", "PreferredAuthentications=password"]
    argv += ["-o", f"NumberOfPasswordPrompts={prompts}", "admin@127.0.0.1", "true"]
    return argv, env


def test_openssh_is_refused_every_prompt_late(tarry: Tarry, tmp_path: Path) -> None:
    argv, env = openssh(port_of(tarry, "openssh"), tmp_path)
    port = port_of(tarry, "openssh")
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - start
    assert done.returncode == 255
    assert "(ED25519) to the list of known hosts" in done.stderr  # it took our key
    assert "Permission denied (publickey,password)" in done.stderr
    assert 3 * AUTH_WAIT - 0.1 <= took <= 3 * AUTH_WAIT + SLACK, took
    (line,) = closes(tarry, port, 1)
    assert " family=openssh " in line and " mode=auth " in line and " auth_tries=3 " in line
    creds = note(line, "auth_creds")
    assert creds == '[["admin","secret1"],["admin","secret2"],["admin","secret3"]]'


ASYNCSSH = """
import asyncio, sys, time
import asyncssh

async def main(port):
    start = time.monotonic()
    try:
        async with asyncssh.connect("127.0.0.1", port, username="oracle", password="oracle1",
                                    known_hosts=None, client_keys=None, agent_path=None):
            print("LOGGED IN")
    except asyncssh.PermissionDenied:
        print("refused", time.monotonic() - start)

asyncio.run(main(int(sys.argv[1])))
"""


def test_asyncssh_is_refused_inside_its_120s_login_timeout(tarry: Tarry) -> None:
    need_module("asyncssh")
    port = port_of(tarry, "asyncssh")
    done = subprocess.run(
        [sys.executable, "-c", ASYNCSSH, str(port)], capture_output=True, text=True, timeout=60
    )
    word, took = done.stdout.split()
    assert word == "refused", done.stdout + done.stderr
    # login_timeout runs from the connection's start: refused at SHARE x 120 s
    assert SHARE * 120 - 0.1 <= float(took) <= SHARE * 120 + SLACK
    (line,) = closes(tarry, port, 1)
    assert " family=asyncssh " in line and " auth_user=oracle " in line
    assert " auth_pass=oracle1 " in line


LIBSSH = """
import ctypes, sys, time
lib = ctypes.CDLL(sys.argv[1])
lib.ssh_new.restype = ctypes.c_void_p
lib.ssh_options_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
lib.ssh_connect.argtypes = [ctypes.c_void_p]
lib.ssh_userauth_none.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.ssh_userauth_password.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
lib.ssh_disconnect.argtypes = [ctypes.c_void_p]
HOST, PORT, USER, TIMEOUT = 0, 1, 4, 9
s = lib.ssh_new()
lib.ssh_options_set(s, HOST, b"127.0.0.1")
port = ctypes.c_int(int(sys.argv[2]))
lib.ssh_options_set(s, PORT, ctypes.byref(port))
lib.ssh_options_set(s, USER, b"admin")
wait = ctypes.c_long(32)  # what hydra sets: its -w, 32 s by default
lib.ssh_options_set(s, TIMEOUT, ctypes.byref(wait))
assert lib.ssh_connect(s) == 0, "connect"
print("none", lib.ssh_userauth_none(s, None), flush=True)
for pw in sys.argv[3:]:
    start = time.monotonic()
    rc = lib.ssh_userauth_password(s, None, pw.encode())
    print("password", rc, time.monotonic() - start, flush=True)
lib.ssh_disconnect(s)
"""


def test_libssh_as_hydra_drives_it_is_refused_each_password_on_one_connection(
    tarry: Tarry,
) -> None:
    path = ctypes.util.find_library("ssh")
    if path is None:
        if IN_CI:
            pytest.fail("libssh is missing, and CI must not skip real-client tests")
        pytest.skip("libssh is not installed")
    port = port_of(tarry, "libssh")
    passwords = ["admin", "changeme", "letmein"]
    done = subprocess.run(
        [sys.executable, "-c", LIBSSH, path, str(port), *passwords],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stdout.split("\n")
    assert lines[0] == "none 1", done.stdout + done.stderr  # SSH_AUTH_DENIED at once
    for line in lines[1:4]:
        _, rc, took = line.split()
        assert rc == "1"  # SSH_AUTH_DENIED, never SUCCESS
        assert SHARE * 32 - 0.1 <= float(took) <= SHARE * 32 + SLACK
    (line,) = closes(tarry, port, 1)
    assert " family=libssh " in line and " auth_tries=3 " in line and " reason=closed " in line
    assert (
        note(line, "auth_creds") == '[["admin","admin"],["admin","changeme"],["admin","letmein"]]'
    )


def test_libssh2_through_curl_is_refused_late(tarry: Tarry) -> None:
    curl = need("curl")
    if "libssh2" not in subprocess.run([curl, "-V"], capture_output=True, text=True).stdout:
        pytest.skip("this curl has no libssh2")
    port = port_of(tarry, "libssh2")
    start = time.monotonic()
    done = subprocess.run(
        [curl, "-sS", "-k", f"sftp://backup:backup123@127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - start
    assert done.returncode == 67, done.stderr  # CURLE_LOGIN_DENIED
    assert AUTH_WAIT - 0.1 <= took <= AUTH_WAIT + SLACK
    (line,) = closes(tarry, port, 1)
    assert " family=libssh2 " in line and " auth_pass=backup123 " in line


# --- the cap, through the engine --------------------------------------------------


def hello() -> bytes:
    lists = ["curve25519-sha256", "ssh-ed25519", "aes128-ctr", "aes128-ctr"]
    lists += ["hmac-sha2-256", "hmac-sha2-256", "none", "none", "", ""]
    return b"SSH-2.0-paramiko_5.1.0\r\n" + frame(kexinit_payload(lists, bytes(16)))


def server_kex(sock: socket.socket) -> str:
    """The kex name-list of the server's KEXINIT."""
    buf = b""
    while True:
        chunk = sock.recv(4096)
        assert chunk, "closed"
        buf += chunk
        if b"\n" in buf:
            got = read_packet(buf[buf.index(b"\n") + 1 :], 35000)
            if got is not None:
                (n,) = struct.unpack_from(">I", got[0], 17)
                return got[0][21 : 21 + n].decode()


def test_max_auth_clients_is_kept_and_released_by_the_engine() -> None:
    t = start_tarry(
        '[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\ndelay = 1.0\n'
        'mode = "auth"\nmax_auth_clients = 1\nkexinit_time = 0'
    )
    try:
        port = t.port()
        first = socket.create_connection(("127.0.0.1", port), timeout=5)
        first.sendall(hello())
        assert server_kex(first).startswith("curve25519-sha256,")  # auth
        with socket.create_connection(("127.0.0.1", port), timeout=5) as second:
            second.sendall(hello())
            assert server_kex(second).startswith("sntrup761x25519")  # kex: the cap is full
        t.wait_for(r"CLOSE .* mode=kex .*auth=full|CLOSE .* auth=full .*mode=kex")
        first.close()  # the engine drops its object: its place is free again
        t.wait_for(r"CLOSE .* mode=auth ")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            third.sendall(hello())
            assert server_kex(third).startswith("curve25519-sha256,")
    finally:
        t.stop()


def test_adaptive_learns_an_openssh_scripts_deadline_then_refuses_inside_it(
    tmp_path: Path,
) -> None:
    """``timeout 4 ssh ...``: kex holds it to its deadline; its next connection
    gets auth, each password refused 1 s inside those 4 s."""
    need("timeout")
    t = start_tarry(
        '[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\ndelay = 0.5\n'
        'mode = "adaptive"\nkexinit_time = 0\nauth_margin = 1\n'
    )
    try:
        port = t.port()
        argv, env = openssh(port, tmp_path, prompts=2)
        first = subprocess.run(["timeout", "4", *argv], env=env, capture_output=True, timeout=60)
        assert first.returncode == 124  # killed at its deadline, held by kex
        line = t.wait_for(r"CLOSE .*")
        assert " mode=kex " in line.string and " family=openssh " in line.string
        start = time.monotonic()
        second = subprocess.run(
            ["timeout", "30", *argv], env=env, capture_output=True, text=True, timeout=60
        )
        took = time.monotonic() - start
        assert "Permission denied (publickey,password)" in second.stderr
        assert 2 * 3.0 - 0.1 <= took <= 2 * 3.0 + SLACK  # two prompts, 3 s each
        line = t.wait_for(r"CLOSE .* mode=auth .*")
        assert " auth_tries=2 " in line.string and " auth_pass=secret2 " in line.string
    finally:
        t.stop()
