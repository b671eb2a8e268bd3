"""The raw stack's TCP decisions, driven with segments and no sockets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tarry.raw import tcp
from tarry.raw.cookie import SLOT, Cookies
from tarry.raw.packet import ACK, FIN, MSS, PSH, RST, SYN, WINDOW, Segment
from tarry.raw.tcp import TAG, Conns, Out, accept, receive, resend, send

CLIENT, SERVER = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
ISN = 0xFFFFFFF0  # near the wrap, so every sum below crosses 2**32


class Clock:
    now = 10 * SLOT

    def __call__(self) -> float:
        return self.now


def seg(seq, ack, flags, payload=b"", options=b"") -> Segment:
    return Segment(
        CLIENT,
        SERVER,
        40000,
        22,
        seq & 0xFFFFFFFF,
        ack & 0xFFFFFFFF,
        flags,
        64240,
        options,
        payload,
    )


def handshake(jar: Cookies) -> tuple[Conns, int, int]:
    """SYN, SYN-ACK, ACK: a row 0 and (our next seq, their next seq)."""
    result, _, _ = accept(jar, seg(ISN, 0, SYN))
    (syn_ack,) = result.replies
    result, snd, rcv = accept(jar, seg(ISN + 1, syn_ack.seq + 1, ACK))
    assert result.opened
    c = Conns()
    c.grow(1)
    c.start(0, snd, rcv)
    return c, snd, rcv


def test_syn_gets_a_tagged_cookie_and_nothing_is_kept():
    jar = Cookies(b"k" * 32, Clock())
    result, _, _ = accept(jar, seg(ISN, 0, SYN))
    (reply,) = result.replies
    assert reply.flags == SYN | ACK and reply.syn_options and reply.ack == (ISN + 1) & 0xFFFFFFFF
    assert (reply.seq + 1) & 0xFF == TAG  # what the filter lets through
    again, _, _ = accept(jar, seg(ISN, 0, SYN))
    assert again.replies == result.replies  # a resent SYN: the same answer, from no state
    other, _, _ = accept(jar, seg(ISN + 7, 0, SYN))
    assert other.replies[0].seq != reply.seq


def test_the_handshake_ack_opens_at_the_right_numbers():
    jar = Cookies(b"k" * 32, Clock())
    c, snd, rcv = handshake(jar)
    assert rcv == (ISN + 1) & 0xFFFFFFFF and snd & 0xFF == TAG
    assert receive(c, 0, seg(rcv, snd, ACK)).replies == ()  # the ACK itself asks nothing


def test_a_forged_or_expired_cookie_gets_a_reset_and_no_row():
    clock = Clock()
    jar = Cookies(b"k" * 32, clock)
    syn_ack = accept(jar, seg(ISN, 0, SYN))[0].replies[0]
    forged, _, _ = accept(jar, seg(ISN + 1, syn_ack.seq + 1 + 256, ACK))
    assert not forged.opened and forged.replies == (
        Out(syn_ack.seq + 1 + 256 & 0xFFFFFFFF, 0, RST),
    )
    untagged, _, _ = accept(jar, seg(ISN + 1, syn_ack.seq + 2, ACK))
    assert not untagged.opened
    other_isn, _, _ = accept(jar, seg(ISN + 2, syn_ack.seq + 1, ACK))
    assert not other_isn.opened
    clock.now += SLOT
    assert accept(jar, seg(ISN + 1, syn_ack.seq + 1, ACK))[0].opened  # the next slot: fine
    clock.now += SLOT
    late, _, _ = accept(jar, seg(ISN + 1, syn_ack.seq + 1, ACK))
    assert not late.opened and late.replies[0].flags == RST
    assert accept(jar, seg(ISN + 1, 5, RST))[0] == tcp.NOTHING  # never answer a RST


def test_in_order_data_is_delivered_and_acked():
    c, snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    result = receive(c, 0, seg(rcv, snd, PSH | ACK, b"SSH-2.0-x\r\n"))
    assert result.data == b"SSH-2.0-x\r\n"
    assert result.replies == (Out(snd, (rcv + 11) & 0xFFFFFFFF, ACK),)


def test_out_of_order_data_is_dropped_and_reacked():
    c, snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    result = receive(c, 0, seg(rcv + 5, snd, PSH | ACK, b"later"))
    assert result.data == b"" and result.replies == (Out(snd, rcv, ACK),)
    assert c.rcv[0] == rcv


def test_overlap_delivers_only_the_new_tail_and_old_data_is_reacked():
    c, snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    receive(c, 0, seg(rcv, snd, ACK, b"abc"))
    result = receive(c, 0, seg(rcv, snd, ACK, b"abcdef"))
    assert result.data == b"def"
    old = receive(c, 0, seg(rcv, snd, ACK, b"abc"))
    assert old.data == b"" and old.replies == (Out(snd, (rcv + 6) & 0xFFFFFFFF, ACK),)


def test_at_most_a_window_is_taken_from_one_segment():
    c, snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    result = receive(c, 0, seg(rcv, snd, ACK, b"x" * (WINDOW + 500)))
    assert len(result.data) == WINDOW and c.rcv[0] == (rcv + WINDOW) & 0xFFFFFFFF


def test_fin_in_order_closes_and_is_answered():
    c, snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    result = receive(c, 0, seg(rcv, snd, FIN | ACK, b"bye"))
    assert result.closed == "closed" and result.data == b"bye"
    assert result.replies == (Out(snd, (rcv + 4) & 0xFFFFFFFF, FIN | ACK),)


def test_fin_after_a_gap_does_not_close():
    c, snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    result = receive(c, 0, seg(rcv + 3, snd, FIN | ACK))
    assert result.closed == ""


def test_reset_in_window_closes_and_a_blind_one_does_not():
    c, _snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    assert receive(c, 0, seg(rcv + WINDOW + 1, 0, RST)).closed == ""
    assert receive(c, 0, seg(rcv, 0, RST)) == tcp.Result(closed="reset")


def test_a_syn_on_a_live_row_gets_a_challenge_ack():
    c, snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    assert receive(c, 0, seg(12345, 0, SYN)).replies == (Out(snd, rcv, ACK),)


def test_send_cuts_at_the_mss_and_moves_snd():
    c, snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    out = send(c, 0, b"y" * (MSS + 10))
    assert [(o.seq, len(o.payload)) for o in out] == [(snd, MSS), ((snd + MSS) & 0xFFFFFFFF, 10)]
    assert c.snd[0] == (snd + MSS + 10) & 0xFFFFFFFF and all(o.ack == rcv for o in out)


def test_a_reported_hole_is_sent_again_on_the_next_tick_once():
    c, snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    send(c, 0, b"line one\r\n")
    send(c, 0, b"line two\r\n")
    assert resend(c, 0) == (0, 0)
    # a pure ACK with a SACK block for line two: line one was lost
    receive(c, 0, seg(rcv, snd, ACK, options=b"\x01\x01\x05\x0a" + bytes(8)))
    assert resend(c, 0) == (snd, 20)
    assert resend(c, 0) == (0, 0)  # one try per report


def test_acks_move_una_but_not_past_what_was_sent():
    c, snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    send(c, 0, b"0123456789")
    receive(c, 0, seg(rcv, snd + 4, ACK, b"q"))
    assert c.una[0] == (snd + 4) & 0xFFFFFFFF
    receive(c, 0, seg(rcv + 1, snd + 400, ACK, b"q"))  # acknowledges what we never sent
    assert c.una[0] == (snd + 4) & 0xFFFFFFFF


def test_close_segments():
    c, snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    assert tcp.close(c, 0) == Out(snd, rcv, FIN | ACK)
    assert tcp.close(c, 0, reset=True) == Out(snd, 0, RST)


def test_columns_fit_the_budget():
    c = Conns(1000)
    total = sum(col.itemsize * len(col) for col in (c.snd, c.una, c.rcv)) + len(c.flags)
    assert total / 1000 <= tcp.BYTES_PER_CLIENT


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-3000, 3000), st.integers(-3000, 3000), st.integers(0, 0x3F),
                  st.binary(max_size=2000), st.binary(max_size=12)),
        max_size=30,
    )
)  # fmt: skip
def test_any_segment_stream_is_handled_and_delivers_a_prefix_in_order(stream):
    c, snd, rcv = handshake(Cookies(b"k" * 32, Clock()))
    start = rcv
    delivered = 0
    for dseq, dack, flags, payload, options in stream:
        result = receive(c, 0, seg(rcv + dseq, snd + dack, flags, payload, options))
        delivered += len(result.data)
        assert (c.rcv[0] - start) & 0xFFFFFFFF in (delivered, delivered + 1)  # +1: a FIN
        assert all(len(o.payload) <= MSS for o in result.replies)
        if result.closed:
            break
