"""The drip, kex and adaptive SSH modes on their own: no engine, no clock.

Our packets are checked by a parser written here from RFC 4253 (not the one in
tarry.sshwire), and again by paramiko's own packet reader; the HASSH of a real
OpenSSH client KEXINIT, captured from the installed ``ssh``, is computed here
independently.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import socket
import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sshhello import capture_openssh_hello
from tarry.bait import STATE_MAX, TarpitSpec
from tarry.baits import registry
from tarry.baits.ssh import (
    DRIP,
    IDENT_MAX,
    KEX,
    KEXIN_DONE,
    KEXINIT_LIMIT,
    KEXOUT_DONE,
    QUICK,
    BannerBait,
    DripPool,
    PatienceStore,
    SshBait,
    family_of,
    make,
)
from tarry.config import ConfigError, parse_tarpit
from tarry.events import Event

PRE_BANNER = re.compile(rb"^(?!SSH-)[\x20-\x7e]*\r\n\Z")


def spec(delay: float = 10.0, jitter: float = 0.0, **options: object) -> TarpitSpec:
    defaults = {k: o.default for k, o in registry()["ssh"].options.items()}
    return TarpitSpec("ssh", ["*:2222"], delay, 4096, jitter, {**defaults, **options})


def bait(mode: str, store: PatienceStore | None = None, **options: object) -> SshBait:
    b = SshBait(spec(mode=mode, **options), store=store if store is not None else PatienceStore())
    return b


# --- an independent reader for what the server sends (RFC 4253 §4.2, §6) -----------


def split_server_stream(data: bytes) -> tuple[bytes, list[tuple[int, bytes, int]]]:
    """(version line, [(packet_length, payload, padding_length)]); asserts framing."""
    end = data.index(b"\r\n")
    version, rest = data[:end], data[end + 2 :]
    packets = []
    while rest:
        assert len(rest) >= 5, "a truncated packet header"
        plen = int.from_bytes(rest[:4], "big")
        padlen = rest[4]
        assert (4 + plen) % 8 == 0, "packet not a multiple of the block size 8"
        assert padlen >= 4, "padding shorter than 4 bytes"
        assert 1 + padlen < plen <= 35000
        assert len(rest) >= 4 + plen, "a truncated packet"
        packets.append((plen, rest[5 : 4 + plen - padlen], padlen))
        rest = rest[4 + plen :]
    return version, packets


def name_lists(payload: bytes) -> tuple[list[list[str]], int, int]:
    """A KEXINIT's ten name-lists, first_kex_packet_follows and reserved."""
    assert payload[0] == 20
    at, lists = 17, []
    for _ in range(10):
        n = int.from_bytes(payload[at : at + 4], "big")
        field = payload[at + 4 : at + 4 + n].decode("ascii")
        lists.append(field.split(",") if field else [])
        at += 4 + n
    follows, reserved = payload[at], int.from_bytes(payload[at + 1 : at + 5], "big")
    assert at + 5 == len(payload), "trailing bytes after the KEXINIT fields"
    return lists, follows, reserved


def run_kex(b: SshBait, ticks: int) -> tuple[bytes, list[float], int]:
    """Everything a kex client receives in ``ticks`` ticks, the delays, the state."""
    step = b.open("192.0.2.7")
    out, delays, state = step.out, [step.delay], step.state
    for _ in range(ticks):
        step = b.tick(state, None, 1.0)
        assert step.obj is None
        out += step.out
        delays.append(step.delay)
        state = step.state
        assert 0 <= state <= STATE_MAX
    return out, delays, state


# --- kex: what we send ---------------------------------------------------------


def test_kex_answers_at_once_with_the_version() -> None:
    step = bait("kex").open("192.0.2.1")
    assert step.out == b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u1\r\n"
    assert step.delay is not None and step.delay < 2
    custom = bait("kex", version="SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.3").open("x").out
    assert custom == b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.3\r\n"


def test_kex_stream_is_well_framed_kexinit_then_ignores() -> None:
    b = bait("kex", kexinit_time=8.0)
    out, delays, _ = run_kex(b, 60)
    version, packets = split_server_stream(out)
    assert version.startswith(b"SSH-2.0-")
    assert packets[0][1][0] == 20 and len(packets) > 30
    assert {p[1][0] for p in packets[1:]} == {2}, "only IGNORE after the KEXINIT"
    for _, payload, _ in packets[1:]:
        n = int.from_bytes(payload[1:5], "big")
        assert len(payload) == 5 + n, "IGNORE carries exactly one string"
    # the KEXINIT takes about kexinit_time, in pieces; then one IGNORE per delay
    kexinit_ticks = next(i for i, d in enumerate(delays) if d > 5)
    assert 6 <= kexinit_ticks <= 40
    assert 5 < sum(delays[:kexinit_ticks]) < 12
    assert all(8 <= d <= 12 for d in delays[kexinit_ticks:])


def test_kexinit_is_valid_plausible_and_never_strict() -> None:
    out, _, _ = run_kex(bait("kex"), 40)
    assert b"kex-strict" not in out
    _, packets = split_server_stream(out)
    lists, follows, reserved = name_lists(packets[0][1])
    assert follows == 0 and reserved == 0
    kex, hostkey, enc_cs, enc_sc, mac_cs, mac_sc, cmp_cs, cmp_sc, lang_cs, lang_sc = lists
    assert "curve25519-sha256" in kex and "diffie-hellman-group14-sha256" in kex
    assert not [k for k in kex if "strict" in k]
    assert {"ssh-ed25519", "rsa-sha2-256"} <= set(hostkey)
    assert "aes128-ctr" in enc_cs and enc_cs == enc_sc
    assert "hmac-sha2-256" in mac_cs and mac_cs == mac_sc
    assert "none" in cmp_cs and cmp_cs == cmp_sc
    assert lang_cs == lang_sc == []


def test_no_two_clients_see_the_same_kexinit() -> None:
    b = bait("kex")
    a, _, _ = run_kex(b, 40)
    c, _, _ = run_kex(b, 40)
    ka, kc = split_server_stream(a)[1][0], split_server_stream(c)[1][0]
    assert ka[1][1:17] != kc[1][1:17], "cookies must differ"
    assert ka[1][17:] == kc[1][17:], "the algorithm lists are those of one server"


def test_paramiko_packet_reader_accepts_our_packets() -> None:
    paramiko_packet = pytest.importorskip("paramiko.packet")
    out, _, _ = run_kex(bait("kex", kexinit_time=2.0), 50)
    rest = out.split(b"\r\n", 1)[1]
    ours, theirs = socket.socketpair()
    try:
        ours.sendall(rest)
        ours.close()
        reader = paramiko_packet.Packetizer(theirs)
        kinds = []
        while True:
            try:
                kind, msg = reader.read_message()
            except EOFError:
                break
            kinds.append(kind)
            if kind == 20:
                msg.get_bytes(16)
                lists = [msg.get_list() for _ in range(10)]
                assert msg.get_boolean() is False and msg.get_int() == 0
                assert "curve25519-sha256@libssh.org" in lists[0]
    finally:
        theirs.close()
    assert kinds[0] == 20 and set(kinds[1:]) == {2} and len(kinds) > 20


def test_min_rate_raises_every_mode_above_the_floor() -> None:
    for mode in ("kex", "drip"):
        b = bait(mode, min_rate=3.0, first_delay=0)
        step = b.open("192.0.2.9")
        state = step.state
        for _ in range(60):
            step = b.tick(state, None, 1.0)
            state = step.state
            assert step.delay is not None
            assert len(step.out) >= 3.0 * step.delay, (mode, len(step.out), step.delay)
    banner = make(spec(min_rate=3.0))
    assert isinstance(banner, BannerBait)
    for _ in range(50):
        step = banner.tick(0, None, 1.0)
        assert len(step.out) >= 30 and all(
            PRE_BANNER.match(x + b"\r\n") for x in step.out.split(b"\r\n")[:-1]
        )


def test_modes_jitter_by_default_so_clients_drift_apart() -> None:
    _, delays, _ = run_kex(bait("kex", kexinit_time=0), 200)
    assert max(delays[1:]) - min(delays[1:]) > 2.0
    assert all(7.9 <= d <= 12.1 for d in delays[1:])


# --- drip -----------------------------------------------------------------------


def test_drip_sends_rfc_lines_one_byte_per_tick_with_no_obj() -> None:
    b = bait("drip", first_delay=0)
    step = b.open("192.0.2.2")
    data, state = step.out, step.state
    assert len(step.out) == 1
    for _ in range(20000):
        step = b.tick(state, None, 1.0)
        assert len(step.out) == 1 and step.obj is None
        data += step.out
        state = step.state
        assert 0 <= state <= STATE_MAX
    lines = data.split(b"\r\n")[:-1]
    assert len(lines) > 50
    for line in lines[1:]:  # the first starts where this client's offset fell
        assert PRE_BANNER.match(line + b"\r\n") and len(line) + 2 <= 255, line
    assert max(len(x) for x in lines) > 150, "lines are long, to cost a line-capped client most"


def test_drip_first_byte_after_first_delay() -> None:
    assert bait("drip").open("x").out == b"" and 7 < bait("drip").open("x").delay < 13
    step = bait("drip", first_delay=2.0).open("x")
    assert step.out == b"" and 1.5 < step.delay < 2.5


def test_drip_pool_respects_any_line_length() -> None:
    for max_len in (3, 4, 40, 255):
        pool = DripPool(max_len)
        assert len(pool.data) <= 65536
        for line in pool.data.split(b"\r\n")[:-1]:
            assert PRE_BANNER.match(line + b"\r\n") and len(line) + 2 <= max_len
        assert pool.data.endswith(b"\r\n")


# --- the client's side: identification, KEXINIT, HASSH --------------------------


def client_kexinit(lists: list[str], follows: int = 0) -> bytes:
    body = bytes([20]) + bytes(range(16))
    body += b"".join(struct.pack(">I", len(x)) + x.encode() for x in lists)
    body += bytes([follows]) + b"\0\0\0\0"
    pad = 8 - (5 + len(body)) % 8
    pad += 8 if pad < 4 else 0
    return struct.pack(">IB", 1 + len(body) + pad, pad) + body + b"\xaa" * pad


def hassh_of(lists: list[str]) -> str:
    raw = ";".join([lists[0], lists[2], lists[4], lists[6]])
    return hashlib.md5(raw.encode()).hexdigest()


def openssh_hello() -> bytes:
    """The identification line and KEXINIT the installed ssh client sends."""
    hello = capture_openssh_hello()
    if hello is None:
        pytest.skip("no ssh client")
    return hello


def test_hassh_of_a_real_openssh_client_kexinit() -> None:
    hello = openssh_hello()
    nl = hello.index(b"\n")
    plen, padlen = struct.unpack(">IB", hello[nl + 1 : nl + 6])
    payload = hello[nl + 6 : nl + 1 + 4 + plen - padlen]
    lists, _, _ = name_lists(payload)
    expected = hashlib.md5(";".join(",".join(lists[i]) for i in (0, 2, 4, 6)).encode()).hexdigest()
    for mode in ("kex", "drip", "adaptive"):
        b = bait(mode)
        state = b.open("192.0.2.3").state
        # the whole hello in one read, and one byte at a time
        one = b.feed(state, None, hello[: nl + 5 + 4 + plen], 0.1)
        notes = dict(one.notes or ())
        assert notes["hassh"] == expected, mode
        assert notes["hassh_algos"].startswith(",".join(lists[0])[:100].encode())
        assert notes["ssh_id"].startswith(b"SSH-2.0-OpenSSH_")
        assert one.obj is None and one.state & KEXIN_DONE
        state, obj, got = b.open("192.0.2.3").state, None, {}
        for i in range(nl + 5 + plen):
            step = b.feed(state, obj, hello[i : i + 1], 0.1)
            state, obj = step.state, step.obj
            got.update(step.notes or ())
            assert obj is None or len(obj) <= KEXINIT_LIMIT + 4
        assert got["hassh"] == expected and obj is None


def test_hassh_known_value_of_a_minimal_kexinit() -> None:
    lists = ["curve25519-sha256", "ssh-ed25519", "aes128-ctr", "aes128-ctr"]
    lists += ["hmac-sha2-256", "hmac-sha2-256", "none", "none", "", ""]
    b = bait("kex")
    step = b.feed(b.open("x").state, None, b"SSH-2.0-Test\r\n" + client_kexinit(lists), 0.0)
    notes = dict(step.notes or ())
    # printf 'curve25519-sha256;aes128-ctr;hmac-sha2-256;none' | md5sum
    assert notes["hassh"] == "e97d07603350d1111ec2b64bf25413c9"
    assert notes["hassh_algos"] == b"curve25519-sha256;aes128-ctr;hmac-sha2-256;none"  # raw


def test_garbage_lengths_are_refused_before_buffering() -> None:
    b = bait("kex")
    state = b.open("x").state
    step = b.feed(state, None, b"SSH-2.0-X\r\n\x7f\xff\xff\xf0\x04", 0.0)
    assert step.obj is None and step.state & KEXIN_DONE
    assert dict(step.notes or ())["hassh_error"].startswith("packet length")
    later = b.feed(step.state, None, b"\x00" * 100000, 0.1)
    assert later.obj is None and later.notes is None


def test_a_first_packet_other_than_kexinit_is_noted_not_kept() -> None:
    b = bait("kex")
    pkt = struct.pack(">IB", 12, 6) + bytes([5, 1, 2, 3, 4]) + b"\0" * 6
    step = b.feed(b.open("x").state, None, b"SSH-2.0-X\r\n" + pkt, 0.0)
    assert dict(step.notes or ())["hassh_error"] == "first packet is type 5"
    assert step.obj is None


@settings(max_examples=400, deadline=None)
@given(
    mode=st.sampled_from(["kex", "drip", "adaptive"]),
    chunks=st.lists(st.binary(max_size=3000), max_size=12),
    ident=st.booleans(),
)
def test_any_input_split_anyhow_is_bounded(mode: str, chunks: list[bytes], ident: bool) -> None:
    b = BAITS[mode]
    step = b.open("2001:db8::5")
    state, obj = step.state, None
    if ident:
        chunks = [b"SSH-2.0-Fuzz\r\n", *chunks]
    for i, chunk in enumerate(chunks):
        step = b.feed(state, obj, chunk, 0.1 * i)
        state, obj = step.state, step.obj
        assert 0 <= state <= STATE_MAX
        assert obj is None or len(obj) <= max(IDENT_MAX, KEXINIT_LIMIT + 4)
        if state & KEXIN_DONE:
            assert obj is None
        if i % 3 == 0:  # time passes too
            step = b.tick(state, obj, 0.1 * i)
            state, obj = step.state, step.obj
            assert step.obj is obj


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10))
def test_a_kexinit_split_anywhere_gives_one_hassh(cuts: list[int]) -> None:
    lists = ["curve25519-sha256,ecdh-sha2-nistp256", "ssh-ed25519", "aes128-ctr,aes256-ctr"]
    lists += ["aes128-ctr", "hmac-sha2-256", "hmac-sha2-256", "none", "none", "", ""]
    hello = b"SSH-2.0-Split_1.0\r\n" + client_kexinit(lists, follows=1) + b"\x00\x00\x00\x0c"
    b = BAITS["kex"]
    state, obj, seen = b.open("x").state, None, []
    bounds = sorted({c % len(hello) for c in cuts} | {0, len(hello)})
    for lo, hi in itertools.pairwise(bounds):
        step = b.feed(state, obj, hello[lo:hi], 0.0)
        state, obj = step.state, step.obj
        seen += [v for k, v in step.notes or () if k == "hassh"]
    assert seen == [hassh_of(lists)] and obj is None


BAITS = {m: bait(m) for m in ("kex", "drip", "adaptive")}


# --- adaptive ---------------------------------------------------------------------


def test_family_of_identification_strings() -> None:
    assert family_of(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5") == "openssh"
    assert family_of(b"SSH-2.0-PuTTY_Release_0.78") == "putty"
    assert family_of(b"SSH-2.0-paramiko_3.4.0") == "paramiko"
    assert family_of(b"SSH-2.0-AsyncSSH_2.14.2") == "asyncssh"
    assert family_of(b"SSH-2.0-dropbear_2022.83") == "dropbear"
    assert family_of(b"SSH-2.0-libssh_0.9.6") == "libssh"
    assert family_of(b"SSH-2.0-libssh2_1.10.0") == "libssh2"
    assert family_of(b"SSH-2.0-Go") == "go"
    assert family_of(b"SSH-2.0-JSCH-0.1.54") == "jsch"
    assert family_of(b"SSH-2.0-Whatever") == "unknown"
    assert family_of(b"GET / HTTP/1.1") == "unknown"
    assert family_of(None) == "silent"


def test_adaptive_waits_briefly_then_answers_the_identification() -> None:
    b = bait("adaptive")
    step = b.open("192.0.2.4")
    assert step.out == b"" and step.delay == 1.0
    got = b.feed(step.state, None, b"SSH-2.0-OpenSSH_9.6\r\n", 0.01)
    assert got.out.startswith(b"SSH-2.0-OpenSSH_9.2p1")
    notes = dict(got.notes or ())
    assert notes["family"] == "openssh" and notes["mode"] == "kex"
    assert notes["ssh_id"] == b"SSH-2.0-OpenSSH_9.6"
    # a library that comes to log in gets the auth mode (tests/test_ssh_auth.py)
    got = b.feed(b.open("192.0.2.4").state, None, b"SSH-2.0-paramiko_3.4.0\r\n", 0.01)
    assert dict(got.notes or ())["mode"] == "auth"


def test_adaptive_gives_paramiko_its_kexinit_within_its_handshake_timer() -> None:
    b = bait("adaptive", kexinit_time=60.0)
    step = b.feed(b.open("192.0.2.5").state, None, b"SSH-2.0-paramiko_3.4.0\r\n", 0.01)
    # paramiko comes to log in: the auth mode sends its whole KEXINIT at once
    assert dict(step.notes or ())["mode"] == "auth"
    assert len(split_server_stream(step.out)[1]) == 1
    b = bait("adaptive", kexinit_time=60.0, max_auth_clients=1)  # past the cap: kex
    held = b.feed(b.open("192.0.2.5").state, None, b"SSH-2.0-paramiko_3.4.0\r\n", 0.01)
    assert held.obj is not None  # its object holds its place
    step = b.feed(b.open("192.0.2.5").state, None, b"SSH-2.0-paramiko_3.4.0\r\n", 0.01)
    assert dict(step.notes or ())["mode"] == "kex"
    state, spent = step.state, 0.0
    while not state & KEXOUT_DONE:
        spent += step.delay
        step = b.tick(state, None, spent)
        state = step.state
        assert spent < 15
    assert spent < 12  # paramiko gives up 15 s after our version
    fixed = bait("kex", kexinit_time=60.0)  # a plain kex listener does the same
    step = fixed.feed(fixed.open("x").state, None, b"SSH-2.0-paramiko_3.4.0\r\n", 0.01)
    assert step.state & QUICK and fixed._piece_interval(step.state) < 1.0
    slow = bait("adaptive", kexinit_time=60.0)
    other = slow.feed(slow.open("x").state, None, b"SSH-2.0-OpenSSH_9.6\r\n", 0.0)
    assert other.delay > 2  # others get the configured, slower KEXINIT


def test_adaptive_gives_a_silent_client_what_the_endless_reference_gives() -> None:
    """A client that says nothing waits for the server to speak first: a scanner,
    not an interactive client. A quick version would end its wait; it gets
    endless lines instead, first after one delay, as from endlessh."""
    b = bait("adaptive")
    step = b.tick(b.open("192.0.2.6").state, None, 1.0)
    notes = dict(step.notes or ())
    assert notes["family"] == "silent" and notes["mode"] == "banner"
    assert step.out == b"" and step.delay is not None and step.delay >= 0.7 * (b.delay - 1.0)
    age = 1.0 + step.delay
    for _ in range(50):
        step = b.tick(step.state, step.obj, age)
        assert step.out.endswith(b"\r\n") and not step.out.startswith(b"SSH-")
        age += step.delay or 0.0


def close_event(ip: str, duration: float, **notes: str) -> Event:
    return Event(
        "close",
        0.0,
        "ssh",
        "*:22",
        "::ffff:" + ip,
        4242,
        7,
        duration=duration,
        reason="closed",
        notes=tuple(notes.items()),
    )


def test_store_learns_grabbers_idle_timeouts_and_count_limits() -> None:
    store = PatienceStore()
    store.enabled = True
    # took our version, left at once, never sent a KEXINIT: a banner grabber
    store.emit(close_event("198.51.100.1", 0.4, mode="kex", pace="10", start="10"))
    assert store.advice("198.51.100.1") == (DRIP, 100)
    # left 4 s into the IGNORE phase while we paced at 10 s: an idle timeout
    store.emit(close_event("198.51.100.2", 14.0, mode="kex", pace="10", start="10", hassh="x"))
    assert store.advice("198.51.100.2") == (KEX, 24)
    # left in the second gap at pace 2 s: it waits about 2 s, so pace at 1.2 s
    store.emit(close_event("198.51.100.2", 13.9, mode="kex", pace="2", start="10", hassh="x"))
    assert store.advice("198.51.100.2") == (KEX, 12)
    # held for many drip ticks, then left: a count limit; kex holds it better
    store.emit(close_event("198.51.100.3", 300.0, mode="drip", pace="1", start="0"))
    assert store.advice("198.51.100.3") == (KEX, 10)
    # shutdowns teach nothing; banner listeners leave no notes
    ev = close_event("198.51.100.4", 1.0, mode="kex", pace="10", start="10")
    ev.reason = "shutdown"
    store.emit(ev)
    store.emit(close_event("198.51.100.5", 1.0))
    assert store.advice("198.51.100.4") is None and store.advice("198.51.100.5") is None
    assert store.visits("198.51.100.1") == 1 and store.visits("198.51.100.2") == 2


def test_adaptive_paces_a_returning_address_under_its_patience() -> None:
    store = PatienceStore()
    b = bait("adaptive", store=store, kexinit_time=2.0)
    ip = "203.0.113.9"
    first = b.feed(b.open(ip).state, None, b"SSH-2.0-OpenSSH_9.6\r\n", 0.0)
    notes = {k: v for k, v in first.notes or () if isinstance(v, str)}
    # it left 6 s after our KEXINIT, with our IGNOREs 10 s apart
    store.emit(close_event(ip, 8.0, **notes, hassh="abc"))
    again = b.open(ip)
    step = b.feed(again.state, None, b"SSH-2.0-OpenSSH_9.6\r\n", 0.0)
    assert dict(step.notes or ())["pace"] == "3.6"
    state, t = step.state, 0.0
    delays = []
    for _ in range(40):
        step = b.tick(state, None, t)
        state = step.state
        delays.append(step.delay)
    assert 2.8 <= delays[-1] <= 4.4  # 3.6 s +/- jitter: under its 6 s patience


def test_store_is_bounded_lru_and_its_memory_is_small() -> None:
    store = PatienceStore(cap=1000)
    store.enabled = True
    for i in range(3000):
        store.emit(
            close_event(f"10.0.{i // 256}.{i % 256}", 1.0, mode="kex", pace="10", start="10")
        )
    assert len(store) == 1000
    assert store.advice("10.0.0.0") is None and store.advice("10.0.11.183") is not None
    big = PatienceStore(cap=20000)
    big.enabled = True
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(20000):
        big.emit(
            close_event(f"172.16.{i // 256}.{i % 256}", 1.0, mode="kex", pace="10", start="10")
        )
    per_ip = (tracemalloc.get_traced_memory()[0] - before) / 20000
    tracemalloc.stop()
    assert per_ip < 200, per_ip  # docs/ssh-modes.md quotes this figure


# --- configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("mode", "tarpit", "must be one of"),
        ("version", "OpenSSH_9.6", 'must start with "SSH-2.0-"'),
        ("version", "SSH-2.0-X\r\nSSH-2.0-Y", "printable ASCII"),
        ("drip_line_length", 256, "from 3 to 255"),
        ("kexinit_time", -1, "must be from 0"),
        ("min_rate", 5000, "bytes per second"),
        ("ident_wait", 60, "must be from 0"),
    ],
)
def test_bad_options_are_rejected_with_the_key(key: str, value: object, says: str) -> None:
    table = {"protocol": "ssh", "listen": ["127.0.0.1:0"], key: value}
    with pytest.raises(ConfigError, match=re.escape(key) + ".*" + re.escape(says)):
        parse_tarpit(table, "[[tarpit]] 1: ")


def test_banner_stays_the_default() -> None:
    s = parse_tarpit({"protocol": "ssh", "listen": ["127.0.0.1:0"]}, "")
    assert isinstance(make(s), BannerBait)
    for mode, cls in (("drip", SshBait), ("kex", SshBait), ("adaptive", SshBait)):
        s = parse_tarpit({"protocol": "ssh", "listen": ["127.0.0.1:0"], "mode": mode}, "")
        assert isinstance(make(s), cls)
