"""The SSH ``auth`` mode on virtual time, driven by a real client's bytes.

paramiko's Transport sits on one end of a socketpair; the bait sits behind a
``Sim`` on the other. The test moves the bytes, and advances the virtual clock
only while the client is waiting for us, so a refusal planned 24 s after a
password request arrives in milliseconds, and the times it was planned at can
be read exactly.
"""

from __future__ import annotations

import gc
import io
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from baitsim import Sim
from tarry.bait import TarpitSpec
from tarry.baits import registry
from tarry.baits.ssh import PatienceStore, SshBait
from tarry.config import ConfigError, parse_tarpit
from tarry.sshauth import KEX_TIME, PACKET_MAX, SERVICE, AuthConn
from tarry.sshwire import MSG_IGNORE, OPENSSH_92_SERVER, frame, kexinit_payload, read_packet

paramiko = pytest.importorskip("paramiko")

DELAY = 10.0


def spec(delay: float = DELAY, **options: object) -> TarpitSpec:
    defaults = {k: o.default for k, o in registry()["ssh"].options.items()}
    return TarpitSpec("ssh", ["*:2222"], delay, 4096, 0.0, {**defaults, **options})


def bait(mode: str = "auth", **options: object) -> SshBait:
    return SshBait(spec(mode=mode, **options), store=PatienceStore())


class Timeline(Sim):
    """A Sim that notes the virtual times at which password answers became
    owed and were paid, and how many packets went out while one was owed."""

    def __init__(self, b: SshBait, peer: str = "127.0.0.1") -> None:
        self.asked: list[float] = []
        self.refused: list[float] = []
        self.waiting_sends = 0
        super().__init__(b, peer)

    def _owed(self) -> int:
        return self.obj.owed if isinstance(self.obj, AuthConn) else 0

    def feed(self, data: bytes) -> None:
        before = self._owed()
        super().feed(data)
        self.asked += [self.now] * max(0, self._owed() - before)

    def tick(self) -> bool:
        before = self._owed()
        sent = self.sent
        fired = super().tick()
        if before and self._owed() < before:
            self.refused += [self.now] * (before - self._owed())
        elif before and self.sent > sent:
            self.waiting_sends += 1
        return fired


def in_kex(sim: Sim) -> bool:
    """Still in the key exchange: the only timer then is its deadline, which
    must not fire merely because the client thread is slow to compute."""
    return isinstance(sim.obj, AuthConn) and sim.obj.phase < SERVICE


def pump(
    sim: Sim,
    sock: socket.socket,
    done: Callable[[], bool],
    deadline: float = 30.0,
    mangle: Callable[[Sim, bytes], bytes] | None = None,
) -> None:
    """Move bytes between ``sock`` and ``sim`` until ``done()``; when the client
    has been quiet for a moment, fire the bait's next timer (virtual time)."""
    end = time.monotonic() + deadline
    sock.setblocking(False)
    while not done():
        assert time.monotonic() < end, "the dialogue did not finish in time"
        ready, _, _ = select.select([sock], [], [], 0.1)
        if ready:
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                return
            sim.feed(mangle(sim, data) if mangle else data)
        elif sim.due is not None and not sim.closed and not in_kex(sim):
            sim.tick()
        out = sim.take()
        if out:
            sock.setblocking(True)
            try:
                sock.sendall(out)
            except ConnectionError:
                return  # the client went away; the test reads why from it
            sock.setblocking(False)
        if sim.closed:
            sock.shutdown(socket.SHUT_RDWR)
            return


class Client(threading.Thread):
    """paramiko's Transport: key exchange, then ``attempts`` in order."""

    def __init__(self, sock: socket.socket, attempts: list[tuple[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.attempts = attempts
        self.results: list[str] = []
        self.key: Any = None
        self.error: BaseException | None = None
        self.authenticated = False

    def run(self) -> None:
        t = paramiko.Transport(self.sock)
        try:
            t.start_client(timeout=10)
            self.key = t.get_remote_server_key()
            for user, secret in self.attempts:
                try:
                    if isinstance(secret, str):
                        t.auth_password(user, secret, fallback=False)
                    elif secret is None:
                        t.auth_none(user)
                    else:
                        t.auth_publickey(user, secret)
                    self.results.append("success")
                except paramiko.BadAuthenticationType as e:
                    self.results.append("bad-type:" + ",".join(e.allowed_types))
                except paramiko.AuthenticationException:
                    self.results.append("refused")
            self.authenticated = t.is_authenticated()
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            t.close()


def run_client(
    b: SshBait,
    attempts: list[tuple[str, Any]],
    mangle: Callable[[Sim, bytes], bytes] | None = None,
) -> tuple[Timeline, Client]:
    server_end, client_end = socket.socketpair()
    sim = Timeline(b)
    client = Client(client_end, attempts)
    client.start()
    try:
        pump(sim, server_end, lambda: not client.is_alive(), mangle=mangle)
    finally:
        client.join(10)
        server_end.close()
    return sim, client


# --- a real client through the whole dialogue -------------------------------------


def test_paramiko_kex_completes_then_each_password_is_refused_2s_inside_its_30s() -> None:
    b = bait()
    pws = ["123456", "password", "admin"]
    sim, client = run_client(b, [("root", pw) for pw in pws])
    assert client.error is None, repr(client.error)
    # the key exchange completed: paramiko verified our host key's signature
    assert client.key.get_name() == "ssh-ed25519"
    assert b.auth is not None and client.key.asbytes() == b.auth.key_blob
    assert client.results == ["refused"] * 3 and not client.authenticated
    # each refusal came auth_margin (2 s) before paramiko's auth_timeout (30 s)
    assert len(sim.asked) == len(sim.refused) == 3
    for asked, refused in zip(sim.asked, sim.refused, strict=True):
        assert refused - asked == pytest.approx(28.0, abs=0.01)
    # with IGNOREs in between (delay 10 s +- 20% jitter: two or more per 28 s wait)
    assert sim.waiting_sends >= 3
    assert sim.notes["mode"] == "auth" and sim.notes["family"] == "paramiko"
    assert sim.notes["auth"] == "exchanged"
    assert sim.notes["auth_user"] == b"root" and sim.notes["auth_tries"] == "3"
    assert sim.notes["auth_pass"] == b"admin"
    assert json.loads(sim.notes["auth_creds"]) == [["root", pw] for pw in pws]


def test_none_and_publickey_are_refused_at_once_and_name_password() -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode()))
    sim, client = run_client(bait(), [("root", None), ("root", pkey)])
    assert client.error is None, repr(client.error)
    assert client.results == ["bad-type:publickey,password", "refused"]
    assert sim.asked == [] and sim.refused == []  # nothing was held back
    assert sim.notes["auth_user"] == b"root" and "auth_tries" not in sim.notes


def test_record_credentials_off_keeps_users_and_counts_only() -> None:
    sim, client = run_client(bait(record_credentials=False), [("admin", "hunter2")])
    assert client.results == ["refused"], repr(client.error)
    assert sim.notes["auth_user"] == b"admin" and sim.notes["auth_tries"] == "1"
    assert "auth_pass" not in sim.notes and "auth_creds" not in sim.notes


def test_credentials_are_bounded_distinct_and_sanitised() -> None:
    pws = ["a", "b", "a", "c\x00\x1b", "d", "e", "f", "x" * 200]
    sim, client = run_client(bait(), [("root", pw) for pw in pws])
    assert client.results == ["refused"] * len(pws), repr(client.error)
    creds = json.loads(sim.notes["auth_creds"])
    assert len(creds) <= 5 and len(sim.notes["auth_creds"]) <= 256
    assert creds[-1] == ["root", "x" * 64]  # each value cut to 64 bytes
    assert ["root", "c\\x00\\x1b"] in creds  # printable
    assert [p for _, p in creds].count("a") <= 1
    assert sim.notes["auth_tries"] == str(len(pws))


def test_a_bad_mac_closes_the_connection() -> None:
    def flip_after_kex(sim: Sim, data: bytes) -> bytes:
        """One bit of the first encrypted packet's MAC (its last byte)."""
        if isinstance(sim.obj, AuthConn) and sim.obj.rx is not None:
            return data[:-1] + bytes([data[-1] ^ 1])
        return data

    sim, client = run_client(bait(), [("root", "pw")], mangle=flip_after_kex)
    assert client.results != ["success"]
    assert sim.closed and sim.notes.get("auth_error") == "bad MAC"
    assert "auth_tries" not in sim.notes


# --- asking for the mode, and its cap ------------------------------------------------


def hello(ident: bytes = b"SSH-2.0-paramiko_5.1.0") -> bytes:
    """An identification line and a KEXINIT offering what the auth mode needs."""
    lists = (
        "curve25519-sha256,ext-info-c",
        "ssh-ed25519",
        "aes128-ctr",
        "aes128-ctr",
        "hmac-sha2-256",
        "hmac-sha2-256",
        "none",
        "none",
        "",
        "",
    )
    return ident + b"\r\n" + frame(kexinit_payload(lists, bytes(16)))


def server_kex_list(out: bytes) -> str:
    """The kex name-list of the KEXINIT after the version line in ``out``."""
    rest = out[out.index(b"\n") + 1 :]
    got = read_packet(rest, 35000)
    assert got is not None
    payload = got[0]
    (n,) = struct.unpack_from(">I", payload, 17)
    return payload[21 : 21 + n].decode()


def test_max_auth_clients_caps_the_mode_and_a_closed_client_frees_its_place() -> None:
    b = bait(max_auth_clients=2)
    sims = [Sim(b) for _ in range(3)]
    assert [isinstance(s.obj, AuthConn) for s in sims] == [True, True, False]
    assert server_kex_list(sims[0].take()).startswith("curve25519-sha256,")
    third = sims[2].run(until=b"\n")
    assert sims[2].notes["auth"] == "full" and sims[2].notes["mode"] == "kex"
    sims[2].run(limit=40)  # the kex mode's KEXINIT, dripped
    assert b.auth is not None and b.auth.live == 2
    assert third.startswith(b"SSH-2.0-")
    # the engine drops a closed client's obj; that alone frees its place
    sims[0].obj = None
    gc.collect()
    assert b.auth.live == 1
    assert isinstance(Sim(b).obj, AuthConn)


def test_adaptive_gives_auth_to_login_families_only() -> None:
    def mode_for(ident: bytes | None) -> tuple[str, bool]:
        s = Sim(bait("adaptive"))
        if ident is not None:
            s.feed(hello(ident))
        else:
            s.tick()
        return s.notes["mode"], isinstance(s.obj, AuthConn)

    for ident in (
        b"SSH-2.0-paramiko_5.1.0",
        b"SSH-2.0-libssh_0.10.6",
        b"SSH-2.0-libssh2_1.11.0",
        b"SSH-2.0-Go",
        b"SSH-2.0-JSCH-0.1.54",
        b"SSH-2.0-AsyncSSH_2.24.1",
    ):
        assert mode_for(ident) == ("auth", True), ident
    # OpenSSH waits forever in kex; it gets auth once its address shows a deadline
    assert mode_for(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6") == ("kex", False)
    assert mode_for(b"SSH-2.0-OpenSSH-keyscan") == ("kex", False)
    assert mode_for(b"SSH-2.0-PuTTY_Release_0.78") == ("kex", False)
    assert mode_for(None) == ("banner", False)


def test_adaptive_past_the_cap_gives_kex() -> None:
    b = bait("adaptive", max_auth_clients=1)
    first, second = Sim(b), Sim(b)
    first.feed(hello())
    second.feed(hello())
    assert isinstance(first.obj, AuthConn) and second.obj is None
    assert second.notes["mode"] == "kex" and second.notes["auth"] == "full"


def test_keyscan_that_looks_like_ssh_is_held_as_kex() -> None:
    """OpenSSH without ext-info-c only wants our key: it never gets it."""
    s = Sim(bait())
    lists = list(OPENSSH_92_SERVER)
    lists[0] = "curve25519-sha256"
    lists[1] = "ssh-ed25519"
    s.feed(b"SSH-2.0-OpenSSH_9.2p1\r\n" + frame(kexinit_payload(lists, bytes(16))))
    assert s.obj is None and s.notes["auth"] == "key-scan" and s.notes["mode"] == "kex"
    s.take()
    s.tick()
    ignore = read_packet(s.take(), 35000)
    assert ignore is not None and ignore[0][0] == MSG_IGNORE
    # an old ssh (before ext-info-c, 7.2) offers many host key types: it logs in
    old = Sim(bait())
    lists[1] = "ssh-rsa-cert-v01@openssh.com,ecdsa-sha2-nistp256,ssh-ed25519,ssh-rsa"
    old.feed(b"SSH-2.0-OpenSSH_6.6.1p1\r\n" + frame(kexinit_payload(lists, bytes(16))))
    assert isinstance(old.obj, AuthConn) and "auth" not in old.notes


def test_a_client_without_our_algorithms_is_held_as_kex() -> None:
    s = Sim(bait())
    lists = list(OPENSSH_92_SERVER)
    lists[2] = lists[3] = "aes256-gcm@openssh.com"
    s.feed(b"SSH-2.0-OpenSSH_9.2p1\r\n" + frame(kexinit_payload(lists, bytes(16))))
    assert s.obj is None and s.notes["auth"] == "no-common-algorithms"
    assert s.due is not None and not s.closed


def test_a_client_silent_in_the_key_exchange_is_let_go_to_kex_after_30s() -> None:
    b = bait()
    s = Sim(b)
    s.feed(b"SSH-2.0-paramiko_5.1.0\r\n")
    assert isinstance(s.obj, AuthConn) and s.due == pytest.approx(KEX_TIME)
    s.tick()
    assert s.obj is None and s.notes["auth"] == "slow-kex" and s.notes["mode"] == "kex"
    gc.collect()
    assert b.auth is not None and b.auth.live == 0


# --- bounds on what the peer sends ---------------------------------------------------


def test_oversized_packet_length_closes_before_its_body_is_buffered() -> None:
    s = Sim(bait())
    s.feed(b"SSH-2.0-paramiko_5.1.0\r\n" + struct.pack(">IB", PACKET_MAX + 8, 4))
    assert s.closed and s.notes["auth_error"] == f"packet length {PACKET_MAX + 8}"


def test_garbage_after_the_version_closes() -> None:
    s = Sim(bait())
    s.feed(b"SSH-2.0-paramiko_5.1.0\r\n" + struct.pack(">IB", 12, 4) + bytes([5]) + bytes(11))
    assert s.closed and "auth_error" in s.notes


def test_a_long_line_without_an_identification_is_closed() -> None:
    s = Sim(bait())
    s.feed(b"x" * 300)
    assert s.closed


# --- configuration -------------------------------------------------------------------


def test_auth_mode_without_cryptography_is_one_clear_line(monkeypatch: Any) -> None:
    import tarry.baits.ssh as ssh_bait

    monkeypatch.setattr(ssh_bait, "available", lambda: False)
    table = {"protocol": "ssh", "listen": ["127.0.0.1:0"], "mode": "auth"}
    with pytest.raises(ConfigError) as err:
        parse_tarpit(table, "t")
    text = str(err.value)
    assert "\n" not in text and "cryptography" in text and "mode" in text


def test_adaptive_learns_each_address_deadline_and_answers_inside_it() -> None:
    """A client that leaves kex after a while had a deadline: from its next
    visit it gets auth, refused just inside what it waited. One that leaves
    auth while a refusal is owed waited less than we planned: the same."""
    store = PatienceStore()
    b = SshBait(spec(mode="adaptive"), store=store)
    ip = "198.51.100.7"
    ident = b"SSH-2.0-OpenSSH_9.2p1"
    first = Sim(b, ip)
    first.feed(hello(ident))
    assert first.notes["mode"] == "kex"
    # it gave up 45 s in, 35 s into the stall: a deadline, not an idle timer
    # (it outlasted three of our 10 s IGNORE gaps)
    assert first.notes["start"] == "10"
    store.emit(close_event(ip, 45.0, first.notes))
    second = Sim(b, ip)
    second.feed(hello(ident))
    assert second.notes["mode"] == "auth" and isinstance(second.obj, AuthConn)
    assert b.auth is not None and b.auth.fail_at(second.obj, 5.0) == pytest.approx(5.0 + 43.0)
    # under auth it left 8 s after its password was owed: next time inside 8 s
    notes = {"mode": "auth", "hassh": "x", "auth_tries": "1", "auth_owed": "1.5"}
    store.emit(close_event(ip, 9.5, notes))
    third = Sim(b, ip)
    third.feed(hello(ident))
    assert b.auth.fail_at(third.obj, 0.0) == pytest.approx(6.0)
    # one that tried and left after its refusal (nothing owed) teaches nothing
    done = {"mode": "auth", "hassh": "x", "auth_tries": "3", "auth_owed": ""}
    from tarry.baits.ssh import lesson

    assert lesson("closed", 90.0, done.get) is None


def close_event(ip: str, duration: float, notes: dict[str, Any]) -> Any:
    from tarry.events import CLOSE, Event

    flat = tuple((k, v if isinstance(v, str) else v.decode("latin-1")) for k, v in notes.items())
    return Event(CLOSE, 0.0, "ssh", "l", ip, 1, 5, duration=duration, reason="closed", notes=flat)


def test_adaptive_without_cryptography_says_so_once_and_gives_kex(
    monkeypatch: Any, capsys: Any
) -> None:
    import tarry.baits.ssh as ssh_bait

    monkeypatch.setattr(ssh_bait, "available", lambda: False)
    monkeypatch.setattr(ssh_bait, "_WARNED", [])
    first = ssh_bait.make(spec(mode="adaptive"))
    ssh_bait.make(spec(mode="adaptive"))  # a reload: no second line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cryptography" in err and '"kex"' in err
    s = Sim(first)
    s.feed(hello())
    assert s.notes["mode"] == "kex" and s.obj is None
