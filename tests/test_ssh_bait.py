"""The SSH banner bait on its own: no sockets, no clock."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tarry.bait import TarpitSpec
from tarry.baits import registry
from tarry.baits.ssh import IDENT_MAX, make

# RFC 4253 §4.2: lines before the version string must not start with "SSH-",
# and (like the version line) are at most 255 bytes with CR LF.
PRE_BANNER = re.compile(rb"^(?!SSH-)[\x20-\x7e]*\r\n\Z")


def spec(**options: object) -> TarpitSpec:
    defaults = {k: o.default for k, o in registry()["ssh"].options.items()}
    return TarpitSpec("ssh", ["*:2222"], 10.0, 4096, options={**defaults, **options})


def test_every_line_is_an_rfc4253_pre_banner_line() -> None:
    for length in (3, 4, 32, 255):
        bait = make(spec(line_length=length))
        state = bait.open("192.0.2.1").state
        lengths = set()
        for _ in range(3000):
            step = bait.tick(state, None, 1.0)
            line = step.out
            assert PRE_BANNER.match(line), line
            assert 3 <= len(line) <= length <= 255
            assert step.delay == 10.0
            lengths.add(len(line))
        # lines vary in length so no fixed pattern matches them
        assert len(lengths) == min(length - 2, 3000) or len(lengths) > 100


def test_lines_vary_in_content() -> None:
    bait = make(spec(line_length=255))
    lines = [bait.tick(0, None, 1.0).out for _ in range(500)]
    # very short lines may repeat by chance; longer ones never do
    long = [x for x in lines if len(x) > 10]
    assert len(set(lines)) >= 490 and len(set(long)) == len(long) > 400


def test_first_line_after_one_delay_by_default_or_at_once() -> None:
    first = make(spec()).open("192.0.2.1")
    assert first.out == b"" and first.delay == 10.0
    now = make(spec(first_delay=0)).open("192.0.2.1")
    assert PRE_BANNER.match(now.out) and now.delay == 10.0
    later = make(spec(first_delay=2.5)).open("192.0.2.1")
    assert later.out == b"" and later.delay == 2.5


def test_jitter_spreads_delays_within_bounds() -> None:
    s = spec()
    s.jitter = 0.25
    bait = make(s)
    delays = [bait.tick(0, None, 0.0).delay for _ in range(1000)]
    assert all(d is not None and 7.5 <= d <= 12.5 for d in delays)
    assert max(delays) - min(delays) > 3.0  # actually spread, not constant


def test_identification_line_is_recorded_once() -> None:
    bait = make(spec())
    step = bait.feed(0, None, b"SSH-2.0-OpenSSH_9.6\r\n\x00\x00\x01\x14kexinit...", 0.1)
    assert step.notes == (("ssh_id", b"SSH-2.0-OpenSSH_9.6"),)
    assert step.obj is None
    again = bait.feed(step.state, step.obj, b"SSH-2.0-Other\r\n", 0.2)
    assert again.notes is None and again.obj is None and again.out == b""


def test_identification_split_across_reads() -> None:
    bait = make(spec())
    a = bait.feed(0, None, b"SSH-2.0-Pa", 0.1)
    assert a.notes is None and a.obj is not None
    b = bait.feed(a.state, a.obj, b"ramiko_3.4\r\n", 0.2)
    assert b.notes == (("ssh_id", b"SSH-2.0-Paramiko_3.4"),) and b.obj is None


def test_identification_is_bounded_and_sanitised() -> None:
    bait = make(spec())
    state, obj = 0, None
    for _ in range(100):  # 100 KB without a line end
        step = bait.feed(state, obj, b"\x1b[31m" + b"A" * 1019, 0.1)
        state, obj = step.state, step.obj
        assert obj is None or len(obj) < IDENT_MAX
        if step.notes:
            value = step.notes[0][1]
            assert value.startswith(b"\x1b[31mAAA") and len(value) <= IDENT_MAX
            break
    else:
        raise AssertionError("the identification was never closed off")
    assert obj is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=20))
def test_any_input_is_bounded(chunks: list[bytes]) -> None:
    bait = make(spec())
    state, obj = bait.open("2001:db8::1").state, None
    for chunk in chunks:
        step = bait.feed(state, obj, chunk, 0.0)
        state, obj = step.state, step.obj
        assert 0 <= state <= 0xFFFFFFFF
        assert obj is None or len(obj) < IDENT_MAX
        assert step.out == b""
