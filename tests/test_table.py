"""The client table alone: rows, their sparse extras and the views, without sockets."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tarry.table import TABLE, ClientTable, Interner, make_table, pack_host, unpack_host


def test_a_row_is_32_bytes() -> None:
    import struct

    assert sum(struct.calcsize(fmt) for _, fmt in TABLE) == 32


def test_byte_counters_stay_exact_past_32_bits() -> None:
    rows = ClientTable(make_table(16))
    rows.take(3)
    rows.lst[3] = 1
    for _ in range(3):
        rows.count(rows.sent, 0, 3, 0xFFFF_FFF0)
    rows.count(rows.recv, 1, 3, 7)
    assert rows.counters(3) == (3 * 0xFFFF_FFF0, 7)
    rows.forget(3)
    assert 3 not in rows.high and rows.clients() == []


def test_take_publishes_how_far_rows_reach() -> None:
    seen: list[int] = []
    rows = ClientTable(make_table(64), publish_top=seen.append)
    for fd in (5, 3, 9, 9):
        rows.take(fd)
    assert rows.top == 10 and seen == [6, 10]


def test_notes_are_shared_and_freed_with_their_last_client() -> None:
    rows = ClientTable(make_table(16))
    notes = (("software", "OpenSSH_9.2"),)
    for fd in (1, 2):
        rows.take(fd)
        rows.lst[fd] = 1
        rows.note[fd] = rows.notes.acquire(notes)
    assert rows.note[1] == rows.note[2] and rows.notes_of(2) == notes
    rows.forget(1)
    assert rows.notes_of(2) == notes
    rows.forget(2)
    assert notes not in rows.notes.ids


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=60))
def test_interner_refcounts_match_a_model(ops: list[tuple[int, bool]]) -> None:
    interner, held = Interner(), []
    for which, take in ops:
        notes = (("k", str(which)),)
        if take or not held:
            held.append((interner.acquire(notes), notes))
        else:
            i, _ = held.pop(0)
            interner.release(i)
    for i, notes in held:
        assert interner.items[i] == notes
    assert set(interner.ids) == {notes for _, notes in held}


@pytest.mark.parametrize(
    ("host", "family", "shown"),
    [
        ("192.0.2.7", socket.AF_INET, "192.0.2.7"),
        ("::ffff:192.0.2.7", socket.AF_INET6, "::ffff:192.0.2.7"),
        ("2001:db8::1", socket.AF_INET6, "2001:db8::1"),
        ("fe80::1%lo", socket.AF_INET6, "fe80::1"),
    ],
)
def test_addresses_round_trip_as_the_socket_shows_them(host: str, family: int, shown: str) -> None:
    assert unpack_host(*pack_host(host), family) == shown
