"""The 4-tuple index: behaves as a dict, costs a few tens of bytes per entry."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tarry.raw.index import KEY_WIDTH, MAX_ROW, Index, tuple_key

keys = st.builds(
    tuple_key,
    st.sampled_from([bytes([10, 0, 0, n]) for n in range(4)] + [bytes(15) + b"\x01"]),
    st.integers(0, 40),
    st.integers(0, 2),
)


class AgainstDict(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index = Index()
        self.model: dict[bytes, int] = {}

    @rule(key=keys, row=st.integers(0, MAX_ROW))
    def put(self, key, row):
        self.index.put(key, row)
        self.model[key] = row

    @rule(key=keys)
    def pop(self, key):
        assert self.index.pop(key) == self.model.pop(key, -1)

    @rule(key=keys)
    def get(self, key):
        assert self.index.get(key) == self.model.get(key, -1)

    @invariant()
    def same(self):
        assert len(self.index) == len(self.model)
        assert sorted(self.index.items()) == sorted(self.model.items())


TestAgainstDict = AgainstDict.TestCase
TestAgainstDict.settings = settings(max_examples=150, stateful_step_count=80, deadline=None)


def test_ipv4_and_ipv6_keys_do_not_collide():
    v4 = tuple_key(bytes([1, 2, 3, 4]), 22, 0)
    v6 = tuple_key(bytes(16), 22, 0)
    assert len(v4) == len(v6) == KEY_WIDTH and v4 != v6
    assert tuple_key(bytes([1, 2, 3, 4]), 22, 1) != v4


def test_churn_reuses_tombstones_and_keeps_probes_ending():
    index = Index()
    for round_ in range(50):
        for n in range(100):
            index.put(tuple_key(bytes([10, 0, round_, n]), n, 0), n)
        for n in range(100):
            assert index.pop(tuple_key(bytes([10, 0, round_, n]), n, 0)) == n
    assert len(index) == 0
    assert index.get(tuple_key(bytes([10, 0, 0, 0]), 0, 0)) == -1
    assert index.nbytes <= 1024 * (KEY_WIDTH + 4)  # did not grow with the churn


def test_bad_keys_and_rows_say_what_is_wrong():
    index = Index()
    with pytest.raises(ValueError, match="20 bytes, not 3"):
        index.get(b"abc")
    with pytest.raises(ValueError, match="out of range"):
        index.put(tuple_key(bytes(4), 1, 0), MAX_ROW + 1)


def bytes_per_entry(n: int) -> float:
    index = Index()
    for i in range(n):
        index.put(tuple_key(i.to_bytes(4, "big"), i & 0xFFFF, 0), i)
    return index.nbytes / n


@pytest.mark.parametrize("n", [1000, 20000, 50000])
def test_a_few_tens_of_bytes_per_entry(n):
    # slots of 24 bytes at a load of 0.375 to 0.75: 32 to 64 bytes per entry
    assert bytes_per_entry(n) <= 64
