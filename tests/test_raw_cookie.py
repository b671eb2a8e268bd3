"""SYN cookies: valid for their slot and the next, bound to everything they cover."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tarry.raw.cookie import SLOT, Cookies

SRC, DST = bytes([192, 0, 2, 1]), bytes([127, 0, 0, 1])


class Clock:
    def __init__(self) -> None:
        self.now = 1000 * SLOT

    def __call__(self) -> float:
        return self.now


def test_valid_in_its_slot_and_the_next_then_expired():
    clock = Clock()
    jar = Cookies(b"k" * 32, clock)
    c = jar.make(SRC, DST, 40000, 22, 12345)
    assert jar.check(SRC, DST, 40000, 22, 12345, c)
    clock.now += SLOT  # the next slot: still good
    assert jar.check(SRC, DST, 40000, 22, 12345, c)
    clock.now += SLOT  # two slots on: expired
    assert not jar.check(SRC, DST, 40000, 22, 12345, c)


@pytest.mark.parametrize(
    "changed",
    [
        (bytes([192, 0, 2, 2]), DST, 40000, 22, 12345),
        (SRC, bytes([127, 0, 0, 2]), 40000, 22, 12345),
        (SRC, DST, 40001, 22, 12345),
        (SRC, DST, 40000, 23, 12345),
        (SRC, DST, 40000, 22, 12346),
    ],
)
def test_bound_to_the_4_tuple_and_the_client_isn(changed):
    jar = Cookies(b"k" * 32, Clock())
    c = jar.make(SRC, DST, 40000, 22, 12345)
    assert not jar.check(*changed, c)


def test_another_secret_does_not_accept_it():
    clock = Clock()
    c = Cookies(b"a" * 32, clock).make(SRC, DST, 1, 2, 3)
    assert not Cookies(b"b" * 32, clock).check(SRC, DST, 1, 2, 3, c)
    assert Cookies(b"a" * 32, clock).check(SRC, DST, 1, 2, 3, c)


def test_random_secret_per_process_and_bounds():
    clock = Clock()
    one, two = Cookies(clock=clock), Cookies(clock=clock)
    assert [one.make(SRC, DST, 1, 2, i) for i in range(4)] != [
        two.make(SRC, DST, 1, 2, i) for i in range(4)
    ]
    with pytest.raises(ValueError, match="16 to 64 bytes"):
        Cookies(b"short")


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_forged_guesses_fail(isn, guess):
    jar = Cookies(b"s" * 32, Clock())
    real = jar.make(SRC, DST, 5, 6, isn)
    assert jar.check(SRC, DST, 5, 6, isn, guess) == (guess == real)


def test_forgery_rate_is_about_two_in_two_to_the_32():
    jar = Cookies(b"s" * 32, Clock())
    hits = sum(jar.check(SRC, DST, 5, 6, 7, guess) for guess in range(0, 2**32, 2**32 // 20000))
    assert hits <= 1  # 20,000 spread guesses; expected 2e4 * 2 / 2**32 ≈ 0


def test_cookies_spread_over_32_bits():
    jar = Cookies(b"s" * 32, Clock())
    values = {jar.make(SRC, DST, port, 22, 0) for port in range(5000)}
    assert len(values) == 5000
    assert max(values) > 2**31 and min(values) < 2**31


def test_mask_compares_only_its_bits():
    jar = Cookies(b"s" * 32, Clock())
    c = jar.make(SRC, DST, 5, 6, 7)
    tagged = (c & 0xFFFFFF00) | 0xA4
    assert not jar.check(SRC, DST, 5, 6, 7, tagged ^ 0x100, 0xFFFFFF00)
    assert jar.check(SRC, DST, 5, 6, 7, tagged, 0xFFFFFF00)
