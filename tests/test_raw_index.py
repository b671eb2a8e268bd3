"""The 4-tuple index: behaves as a dict, costs a few tens of bytes per entry."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tarry.raw.index import KEY_WIDTH, MAX_ROW, Index, RowIndex, tuple_key

keys = st.builds(
    tuple_key,
    st.sampled_from([bytes([10, 0, 0, n]) for n in range(4)] + [bytes(15) + b"\x01"]),
    st.integers(0, 40),
    st.integers(0, 2),
)


class AgainstDict(RuleBasedStateMachine):
    """An index against a dict; rows hold their key in 'columns', as the
    engine's rows will, which RowIndex reads and Index does not need."""

    def __init__(self) -> None:
        super().__init__()
        self.columns: dict[int, bytes] = {}
        self.model: dict[bytes, int] = {}
        self.next_row = 0
        self.index = self.make()

    def make(self) -> Index | RowIndex:
        return Index()

    @rule(key=keys)
    def open(self, key):
        if key in self.model:
            return
        row = self.next_row
        self.next_row += 1
        self.columns[row] = key
        self.index.put(key, row)
        self.model[key] = row

    @rule(key=keys)
    def close(self, key):
        assert self.index.pop(key) == self.model.pop(key, -1)

    @rule(key=keys)
    def get(self, key):
        assert self.index.get(key) == self.model.get(key, -1)

    @invariant()
    def same(self):
        assert len(self.index) == len(self.model)
        assert sorted(self.index.rows()) == sorted(self.model.values())


class KeysAgainstDict(AgainstDict):
    @rule(key=keys, row=st.integers(0, MAX_ROW))
    def replace(self, key, row):
        self.index.put(key, row)
        self.model[key] = row

    @invariant()
    def same_items(self):
        assert isinstance(self.index, Index)
        assert sorted(self.index.items()) == sorted(self.model.items())


class RowsAgainstDict(AgainstDict):
    def make(self) -> Index | RowIndex:
        return RowIndex(self.columns.__getitem__)


for machine in (KeysAgainstDict, RowsAgainstDict):
    machine.TestCase.settings = settings(max_examples=100, stateful_step_count=60, deadline=None)
TestKeysAgainstDict = KeysAgainstDict.TestCase
TestRowsAgainstDict = RowsAgainstDict.TestCase


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


def test_row_index_confirms_a_hash_match_with_the_rows_own_key():
    columns = {0: b"a" * 20}
    index = RowIndex(columns.__getitem__)
    index.put(columns[0], 0)
    assert index.get(b"a" * 20) == 0
    columns[0] = b"c" * 20  # the row now holds another client: the old key must miss
    assert index.get(b"a" * 20) == -1


@pytest.mark.parametrize("n", [1000, 50000])
def test_row_index_costs_about_sixteen_bytes_an_entry(n):
    index = RowIndex(lambda row: tuple_key(row.to_bytes(4, "big"), row & 0xFFFF, 0))
    for i in range(n):
        index.put(tuple_key(i.to_bytes(4, "big"), i & 0xFFFF, 0), i)
    assert index.nbytes / n <= 22  # 8-byte slots at a load of 0.375 to 0.75
    assert index.get(tuple_key((n - 1).to_bytes(4, "big"), (n - 1) & 0xFFFF, 0)) == n - 1
