"""The SMTP bait as a sans-I/O machine: dialogue, reply shapes, pacing, bounds."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baitsim import Sim
from tarry.bait import TarpitSpec
from tarry.baits import registry, smtp
from tarry.config import ConfigError, check_value

REPLY = re.compile(rb"\d{3}[ -][^\r\n]*\r\n")
HOST = "mx.tarry.test"


def spec(delay: float = 0.0, jitter: float = 0.0, **opts: object) -> TarpitSpec:
    options = {k: o.default for k, o in smtp.OPTIONS.items()}
    options["hostname"] = HOST
    options.update(opts)
    return TarpitSpec("smtp", ["127.0.0.1:0"], delay, 16, jitter, options)


def lines(data: bytes) -> list[bytes]:
    assert data.endswith(b"\r\n") or not data, data[-40:]
    return [line + b"\r\n" for line in data.split(b"\r\n")[:-1]]


def assert_shapes(data: bytes) -> None:
    for line in lines(data):
        assert REPLY.fullmatch(line), line


def greeted(bait: smtp.SmtpBait | None = None) -> Sim:
    sim = Sim(bait or smtp.make(spec()))
    assert sim.run() == f"220 {HOST} ESMTP Postfix\r\n".encode()
    return sim


def say(sim: Sim, data: bytes) -> bytes:
    sim.feed(data)
    return sim.run()


def test_module_shape():
    assert registry()["smtp"] is smtp.BAIT
    assert smtp.DEFAULTS["delay"] == 2.0
    for key, option in smtp.OPTIONS.items():
        assert isinstance(option.default, option.kind), key
        assert check_value("", key, option.default, option) == option.default, key
    for key, bad in (("hostname", "bad host!"), ("greeting_lines", -2), ("tls_stutter", -1.0)):
        with pytest.raises(ConfigError, match=key):
            check_value("", key, bad, smtp.OPTIONS[key])
    assert check_value("", "tls_stutter", True, smtp.OPTIONS["tls_stutter"]) is True


def test_full_dialogue():
    sim = greeted()
    ehlo = say(sim, b"EHLO client.example.org\r\n")
    assert ehlo.startswith(f"250-{HOST}\r\n".encode())
    for ext in (b"PIPELINING", b"SIZE 10240000", b"8BITMIME", b"AUTH PLAIN LOGIN"):
        assert b"250-" + ext + b"\r\n" in ehlo or b"250 " + ext + b"\r\n" in ehlo
    assert b"STARTTLS" not in ehlo  # no TLS layer attached
    assert_shapes(ehlo)
    assert lines(ehlo)[-1].startswith(b"250 ")
    assert say(sim, b"MAIL FROM:<spam@bulk.example> SIZE=1234 BODY=8BITMIME\r\n") == (
        b"250 2.1.0 Ok\r\n"
    )
    assert say(sim, b"RCPT TO:<victim@example.net>\r\n") == b"250 2.1.5 Ok\r\n"
    assert say(sim, b"rcpt to: <other@example.net>\r\n") == b"250 2.1.5 Ok\r\n"
    assert say(sim, b"DATA\r\n") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    sim.feed(b"Subject: buy\r\n\r\nbody\r\n..dot-stuffed\r\n")
    assert sim.run() == b""  # no reply inside the body
    assert say(sim, b".\r\n") == b"451 4.3.0 Error: queue file write error\r\n"
    assert say(sim, b"RSET\r\n") == b"250 2.0.0 Ok\r\n"
    assert say(sim, b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"
    assert say(sim, b"VRFY root\r\n").startswith(b"252 2.0.0 ")
    assert say(sim, b"HELP\r\n").startswith(b"214 ")
    assert say(sim, b"STARTTLS\r\n") == b"502 5.5.1 Error: command not implemented\r\n"
    assert not sim.closed
    assert say(sim, b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    assert sim.closed
    assert sim.notes["ehlo"] == "client.example.org"
    assert sim.notes["mail_from"] == "spam@bulk.example"
    assert sim.notes["rcpt_to"] == "victim@example.net,other@example.net"


def test_sequence_and_syntax_errors():
    sim = greeted()
    assert say(sim, b"MAIL FROM:<a@b.c>\r\n").startswith(b"503 ")
    assert say(sim, b"AUTH PLAIN\r\n").startswith(b"503 ")
    assert say(sim, b"EHLO\r\n").startswith(b"501 ")
    assert say(sim, b"HELO\r\n").startswith(b"501 ")
    assert say(sim, b"HELO h\r\n") == f"250 {HOST}\r\n".encode()
    assert say(sim, b"RCPT TO:<a@b.c>\r\n").startswith(b"503 ")
    assert say(sim, b"DATA\r\n").startswith(b"503 ")
    assert say(sim, b"MAIL TO:<a@b.c>\r\n").startswith(b"501 ")
    assert say(sim, b"MAIL FROM:<a b@c>\r\n").startswith(b"501 ")
    assert say(sim, b"MAIL FROM:<a@b.c> FOO=1\r\n").startswith(b"555 ")
    assert say(sim, b"MAIL FROM:<a@b.c> SIZE=999999999\r\n").startswith(b"552 ")
    assert say(sim, b"MAIL FROM:<>\r\n") == b"250 2.1.0 Ok\r\n"  # the null sender
    assert say(sim, b"MAIL FROM:<a@b.c>\r\n").startswith(b"503 ")  # nested
    assert say(sim, b"DATA\r\n").startswith(b"554 ")  # no recipients
    assert say(sim, b"RCPT TO:<>\r\n").startswith(b"501 ")
    assert say(sim, b"RCPT TO:<a@b.c> NOTIFY=NEVER\r\n").startswith(b"555 ")
    assert say(sim, b"DATA now\r\n").startswith(b"501 ")
    assert say(sim, b"RSET now\r\n").startswith(b"501 ")
    assert say(sim, b"VRFY\r\n").startswith(b"501 ")
    assert say(sim, b"AUTH PLAIN\r\n").startswith(b"503 ")  # HELO, not EHLO
    assert say(sim, b"FROB\r\n") == b"500 5.5.2 Error: command not recognized\r\n"
    assert say(sim, b"\r\n").startswith(b"500 ")
    assert say(sim, b"\x16\x03\x01\x02\x00\x01\x00\xff\r\n").startswith(b"500 ")
    assert say(sim, b"GET / HTTP/1.1\r\n").startswith(b"500 ")
    assert not sim.closed


def test_bare_lf_and_lowercase_accepted():
    sim = greeted()
    assert say(sim, b"ehlo x\n").startswith(b"250-")
    assert say(sim, b"mail from:<a@b.c>\n") == b"250 2.1.0 Ok\r\n"


def test_pipelined_commands_answered_in_order():
    sim = greeted()
    say(sim, b"EHLO x\r\n")
    burst = b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<g@h.i>\r\nDATA\r\n"
    got = say(sim, burst)
    assert got == (
        b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    # A pipelined body and the next transaction, all in one read.
    got = say(sim, b"hi\r\n.\r\nMAIL FROM:<x@y.z>\r\nQUIT\r\n")
    assert got == (b"451 4.3.0 Error: queue file write error\r\n250 2.1.0 Ok\r\n221 2.0.0 Bye\r\n")
    assert sim.closed


def test_pending_input_is_bounded():
    sim = Sim(smtp.make(spec(delay=1.0)))
    sim.tick()  # the greeting is dripping
    for _ in range(100):
        sim.feed(b"NOOP\r\n" * 200)
    assert isinstance(sim.obj, smtp.Session)
    assert len(sim.obj.buf) <= smtp.PENDING_MAX
    out = sim.run(limit=200000)
    assert_shapes(out)
    assert out.count(b"250 2.0.0 Ok\r\n") <= smtp.PENDING_MAX // 6
    assert sim.obj.buf is None or b"\n" not in sim.obj.buf  # a cut-off partial line at most


def test_long_line_rejected_then_recovers():
    sim = greeted()
    sim.feed(b"EHLO " + b"x" * 5000)
    assert sim.run() == b"500 5.5.2 Error: line too long\r\n"
    sim.feed(b"y" * 3000 + b"\r\nNOOP\r\n")  # the rest of the long line is skipped
    assert sim.run() == b"250 2.0.0 Ok\r\n"


def test_data_terminator_split_across_reads():
    sim = greeted()
    say(sim, b"HELO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n")
    assert say(sim, b"DATA\r\n").startswith(b"354 ")
    body = b"line one\r\n.\x00not the end\r\nmore\r\n.\r\nNOOP\r\n"
    for i in range(len(body)):
        sim.feed(body[i : i + 1])
    assert sim.run() == b"451 4.3.0 Error: queue file write error\r\n250 2.0.0 Ok\r\n"
    assert sim.obj.tail == b"" and sim.obj.size == 0


def test_empty_body_and_oversized_body():
    sim = greeted()
    say(sim, b"HELO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n")
    say(sim, b"DATA\r\n")
    assert say(sim, b".\r\n").startswith(b"451 ")
    say(sim, b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n")
    say(sim, b"DATA\r\n")
    chunk = b"x" * 65535 + b"\r\n"
    for _ in range(smtp.SIZE_MAX // len(chunk) + 2):
        sim.feed(chunk)
    assert sim.run() == b""
    assert sim.obj.buf is None and len(sim.obj.tail) <= 4
    assert say(sim, b".\r\n") == b"552 5.3.4 Message size exceeds fixed limit\r\n"


def test_auth_plain_and_login():
    sim = greeted()
    say(sim, b"EHLO x\r\n")
    plain = base64.b64encode(b"\x00alice\x00s3cret")
    assert say(sim, b"AUTH PLAIN " + plain + b"\r\n").startswith(b"535 5.7.8 ")
    assert sim.notes["auth_mech"] == "PLAIN" and sim.notes["auth_user"] == "alice"
    assert "auth_pass" not in sim.notes
    assert say(sim, b"AUTH PLAIN\r\n") == b"334 \r\n"
    assert say(sim, base64.b64encode(b"\x00bob\x00pw") + b"\r\n").startswith(b"535 ")
    assert sim.notes["auth_user"] == "bob"
    assert say(sim, b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert say(sim, base64.b64encode(b"carol") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert sim.notes["auth_mech"] == "LOGIN" and sim.notes["auth_user"] == "carol"
    assert say(sim, base64.b64encode(b"hunter2") + b"\r\n").startswith(b"535 ")
    assert say(sim, b"AUTH LOGIN\r\n").startswith(b"334 ")
    assert say(sim, b"*\r\n").startswith(b"501 ")
    assert say(sim, b"AUTH PLAIN\r\n").startswith(b"334 ")
    assert say(sim, b"!!!not base64\r\n").startswith(b"501 ")
    assert say(sim, b"AUTH CRAM-MD5\r\n").startswith(b"535 ")
    assert say(sim, b"AUTH\r\n").startswith(b"501 ")
    assert say(sim, b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"  # back to commands
    assert "auth_pass" not in sim.notes


def test_auth_password_recorded_only_when_asked():
    sim = greeted(smtp.make(spec(record_passwords=True)))
    say(sim, b"EHLO x\r\nAUTH LOGIN " + base64.b64encode(b"dave") + b"\r\n")
    say(sim, base64.b64encode(b"pass\x00word") + b"\r\n")
    assert sim.notes["auth_user"] == "dave"
    assert sim.notes["auth_pass"] == "pass\\x00word"  # sanitised


def test_recipient_notes_and_count_bounded():
    sim = greeted()
    say(sim, b"HELO x\r\nMAIL FROM:<a@b.c>\r\n")
    for i in range(smtp.RCPT_MAX + 5):
        reply = say(sim, f"RCPT TO:<user{i}@example.net>\r\n".encode())
        assert reply.startswith(b"250 " if i < smtp.RCPT_MAX else b"452 ")
    noted = sim.notes["rcpt_to"].split(",")
    assert noted == [f"user{i}@example.net" for i in range(smtp.RCPT_NOTED)]


def test_greeting_continuation_lines():
    sim = Sim(smtp.make(spec(greeting_lines=3)))
    got = lines(sim.run())
    assert len(got) == 4
    assert all(line.startswith(b"220-") for line in got[:3])
    assert got[3] == f"220 {HOST} ESMTP Postfix\r\n".encode()


def test_endless_greeting_never_ends():
    sim = Sim(smtp.make(spec(greeting_lines=-1)))
    for _ in range(20000):
        assert sim.tick()
    sim.feed(b"EHLO x\r\n")  # buffered, never answered
    for _ in range(2000):
        assert sim.tick()
    got = sim.take()
    body = got[: got.rfind(b"\r\n") + 2]
    assert len(lines(body)) > 300
    assert all(line.startswith(b"220-") for line in lines(body))
    assert_shapes(body)


def test_stutter_pacing_and_budget():
    bait = smtp.make(spec(delay=2.0, jitter=0.25))
    sim = Sim(bait)
    start = sim.now
    per_tick = []
    while True:
        before = len(sim.out)
        if not sim.tick():
            break
        per_tick.append(len(sim.out) - before)
    greeting = sim.take()
    assert greeting.endswith(b"ESMTP Postfix\r\n")
    assert per_tick[0] == 4 and set(per_tick[1:]) == {1}  # the code whole, then a byte a tick
    assert sim.now - start >= (len(greeting) - 3) * 2.0 * 0.75
    # The EHLO reply is long: it drips faster so that it stays within its budget.
    t0 = sim.now
    sim.feed(b"EHLO x\r\n")
    reply = sim.run()
    assert reply.startswith(b"250-")
    assert sim.now - t0 <= smtp.BUDGET
    assert sim.now - t0 >= smtp.BUDGET * 0.4  # steps round up; each code goes whole
    # With a delay too long for the budget, whole replies go at once, still one per tick.
    slow = Sim(smtp.make(spec(delay=500.0)))
    assert slow.tick() and slow.take().endswith(b"\r\n")


def test_session_limit_ends_with_421():
    expired = f"421 4.4.2 {HOST} Error: timeout exceeded\r\n".encode()
    sim = Sim(smtp.make(spec(session_limit=100.0, delay=1.0)))
    assert sim.run(until=b"Postfix\r\n").endswith(b"Postfix\r\n")
    assert sim.due is not None  # idle, but a timer stands for the limit
    assert sim.run() == expired
    assert sim.closed and sim.now >= 100.0
    busy = Sim(smtp.make(spec(session_limit=50.0, delay=1.0)))
    busy.run(until=b"Postfix\r\n")
    busy.feed(b"EHLO x\r\n")
    got = busy.run()
    assert lines(got)[-1] == expired  # after the EHLO reply in flight
    assert lines(got)[0].startswith(b"250-")
    assert busy.closed


def test_no_obj_data_on_the_bait():
    bait = smtp.make(spec())
    before = dict(vars(bait))
    sim = greeted(bait)
    say(sim, b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nhi\r\n.\r\n")
    assert {k: v for k, v in vars(bait).items() if k != "tls_room"} == {
        k: v for k, v in before.items() if k != "tls_room"
    }


def test_session_object_is_small():
    sess = smtp.Session(b"x", 1)
    assert not hasattr(sess, "__dict__")


chunks = st.lists(st.binary(max_size=300), max_size=40)
words = st.sampled_from(
    [b"EHLO a\r\n", b"HELO b\r\n", b"MAIL FROM:<a@b.c>\r\n", b"RCPT TO:<d@e.f>\r\n",
     b"DATA\r\n", b".\r\n", b"RSET\r\n", b"AUTH LOGIN\r\n", b"AUTH PLAIN\r\n", b"*\r\n",
     b"STARTTLS\r\n", b"NOOP\r\n", b"\r\n", b"\n.\n", b"VRFY x\r\n", b"QUIT\r\n"]
)  # fmt: skip
mixed = st.lists(st.one_of(words, st.binary(max_size=64)), max_size=60)


def fuzz(pieces: list[bytes], ticks: list[int], **opts: object) -> None:
    bait = smtp.make(spec(**opts))
    sim = Sim(bait)
    for i, piece in enumerate(pieces):
        for _ in range(ticks[i % len(ticks)] if ticks else 1):
            sim.tick()
        if sim.closed:
            break
        sim.feed(piece)
        sess = sim.obj
        assert sess is None or len(sess.buf or b"") <= smtp.PENDING_MAX
    sim.run(limit=100000)
    assert bait.errors == 0
    assert sim.closed or sim.due is None or bait.session_limit
    assert_shapes(sim.take())


@settings(max_examples=300, deadline=None)
@given(chunks, st.lists(st.integers(0, 30), max_size=10))
def test_fuzz_arbitrary_bytes(pieces, ticks):
    fuzz(pieces, ticks)


@settings(max_examples=300, deadline=None)
@given(mixed, st.lists(st.integers(0, 30), max_size=10), st.integers(-1, 2))
def test_fuzz_commands_and_garbage(pieces, ticks, greeting_lines):
    if greeting_lines < 0:
        greeting_lines = 1  # an endless greeting would never drain
    fuzz(pieces, ticks, greeting_lines=greeting_lines)


@settings(max_examples=100, deadline=None)
@given(mixed, st.integers(1, 7))
def test_fuzz_split_points_do_not_matter(pieces, cut):
    """The same stream fed whole or in small slices gets the same replies."""
    stream = b"".join(pieces)[:3000]
    whole = Sim(smtp.make(spec()))
    whole.run()
    whole.feed(stream)
    a = whole.run()
    sliced = Sim(smtp.make(spec()))
    sliced.run()
    b = b""
    for i in range(0, len(stream), cut):
        if sliced.closed:
            break
        sliced.feed(stream[i : i + cut])
        b += sliced.run()
    assert a == b


def segments(sim: Sim, until: bytes) -> list[bytes]:
    """What the bait sends, one segment per tick, until ``until`` went out."""
    out: list[bytes] = []
    for _ in range(100000):
        if until in b"".join(out) or not sim.tick():
            break
        seg = sim.take()
        if seg:
            out.append(seg)
    return out


@given(delay=st.sampled_from([0.5, 2.0, 7.0, 30.0, 70.0]), lines_=st.integers(0, 3))
@settings(max_examples=40, deadline=None)
def test_a_reply_code_is_never_split_across_segments(delay, lines_):
    """Every line's code and separator ("220 ", "250-") reach the client in one
    segment, whatever the drip step: a client that judges a reply by its first
    segment must see the code. What follows the code drips."""
    bait = smtp.make(spec(delay=delay, greeting_lines=lines_))  # drip steps of 1 to 40 bytes
    sim = Sim(bait)
    greeting = segments(sim, b" ESMTP Postfix\r\n")
    sim.feed(b"EHLO x.example\r\n")
    ehlo = segments(sim, b"250 8BITMIME\r\n")
    for segs in (greeting, ehlo):
        stream = b"".join(segs)
        assert_shapes(stream)
        cuts = set()
        at = 0
        for seg in segs[:-1]:
            at += len(seg)
            cuts.add(at)
        starts = [0] + [i + 1 for i in range(len(stream)) if stream[i : i + 1] == b"\n"]
        for s in starts:
            assert not cuts & {s + 1, s + 2, s + 3}, (stream[s : s + 8], delay)
    if delay <= 2.0:  # and the rest still drips: many segments per line
        assert len(ehlo) > 4 * greeting_count(ehlo)
    if lines_:  # a greeting of many lines goes a whole line a segment, as the reference's
        assert all(seg.endswith(b"\r\n") and seg.count(b"\n") == 1 for seg in greeting)


def greeting_count(segs: list[bytes]) -> int:
    return b"".join(segs).count(b"\n")


def test_whole_code_moves_only_cuts_inside_a_code():
    reply = b"250-a\r\n250 b\r\n"
    assert [smtp.whole_code(reply, 0, e) for e in range(1, 15)] == [
        4, 4, 4, 4, 5, 6, 7, 11, 11, 11, 11, 12, 13, 14,
    ]  # fmt: skip


def test_a_deadline_learned_from_an_address_paces_every_reply_inside_it():
    """A tool that left a dripping reply after 20 s waits at most 20 s for a
    reply: from that address, every reply (the greeting whole, each 535) is
    done within 80% of it, so a brute-forcer goes from password to password."""
    from tarry.deadlines import SHARE, DeadlineStore
    from tarry.events import CLOSE, Event

    store = DeadlineStore("smtp", smtp.lesson)
    store.enabled = True
    bait = smtp.make(spec(delay=2.0, greeting_lines=-1))
    bait.store = store
    first = Sim(bait, peer="192.0.2.5")
    for _ in range(12):  # 24 s into an endless greeting...
        first.tick()
    assert first.notes["replying_since"] == "0.0"
    # ...it leaves: the engine's CLOSE event teaches the store
    store.emit(
        Event(CLOSE, 0.0, "smtp", "*:25", "192.0.2.5", 1, 7, duration=first.now,
              reason="closed", notes=tuple(first.notes.items()))
    )  # fmt: skip
    learned = store.deadline("192.0.2.5", 0)
    assert learned is not None and abs(learned - first.now) < 0.1

    sim = Sim(bait, peer="192.0.2.5")
    t0 = sim.now
    assert sim.run() == f"220 {HOST} ESMTP Postfix\r\n".encode()  # no endless lines now
    assert sim.now - t0 <= SHARE * learned
    for word in (b"EHLO x\r\n", b"AUTH LOGIN\r\n", b"dXNlcg==\r\n", b"cGFzcw==\r\n"):
        t0 = sim.now
        reply = say(sim, word)
        assert reply and sim.now - t0 <= SHARE * learned + 0.01, (word, sim.now - t0)
    assert reply.startswith(b"535 ")
    assert sim.notes["replying_since"] == "-"  # waiting for the client: nothing to learn
    # another address still gets the endless greeting
    other = Sim(bait, peer="192.0.2.6")
    for _ in range(30):
        other.tick()
    assert other.take().startswith(b"220-")


def test_departures_that_teach_nothing():
    from tarry.events import CLOSE, Event

    def ev(reason: str, since: str, duration: float = 30.0) -> Event:
        return Event(CLOSE, 0.0, "smtp", "*:25", "192.0.2.9", 1, 7, duration=duration,
                     reason=reason, notes=(("replying_since", since),))  # fmt: skip

    assert smtp.lesson(ev("closed", "-")) is None  # it left while we waited for it
    assert smtp.lesson(ev("bait", "3.0")) is None  # we closed it
    assert smtp.lesson(ev("reset", "10.0")) == ("", 20.0)
