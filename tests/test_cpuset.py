"""CPU sets: the kernel's list and mask formats, strictness, and set algebra."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpuref import ref_parse_list, ref_to_list, ref_to_mask
from kata_numa import CpuSet
from kata_numa.errors import CpuSetError, KataNumaError

LISTS = [
    pytest.param("", [], id="empty"),
    pytest.param("\n", [], id="newline-only"),
    pytest.param("0-3\n", [0, 1, 2, 3], id="range-newline"),
    pytest.param("0,2-4,7", [0, 2, 3, 4, 7], id="mixed"),
    pytest.param("0-15:2/4", [0, 1, 4, 5, 8, 9, 12, 13], id="stride"),
    pytest.param("0-6:3/4", [0, 1, 2, 4, 5, 6], id="stride-cut-by-end"),
    pytest.param("1023", [1023], id="cpu-1023"),
    pytest.param("0-4095", list(range(4096)), id="4096-cpus"),
    pytest.param("8191", [8191], id="cpu-8191"),
    pytest.param("5,1,3", [1, 3, 5], id="unordered"),
    pytest.param("1-1", [1], id="one-cpu-range"),
]


@pytest.mark.parametrize(("text", "cpus"), LISTS)
def test_parse_list(text: str, cpus: list[int]) -> None:
    assert list(CpuSet.parse_list(text)) == cpus


MASKS = [
    pytest.param("00000000,0000ffff", "0-15", id="two-groups"),
    pytest.param("ff,ffffffff", "0-39", id="short-first-group"),
    pytest.param("ff,ffffffff\n", "0-39", id="newline"),
    pytest.param("80000000,00000000", "63", id="high-bit"),
    pytest.param("1" + ",00000000" * 31, "992", id="1024-wide"),
    pytest.param("0", "", id="zero"),
    pytest.param("", "", id="empty"),
    pytest.param("AA", "1,3,5,7", id="upper-case"),
]


@pytest.mark.parametrize(("text", "cpus"), MASKS)
def test_parse_mask(text: str, cpus: str) -> None:
    assert CpuSet.parse_mask(text).to_list() == cpus


REJECTED_LISTS = [
    pytest.param("1,2abc,3", "at character 2", id="garbage-in-item"),
    pytest.param("3-1", "backwards", id="backwards-range"),
    pytest.param("-1", "at character 0", id="negative"),
    pytest.param("1,,2", "empty item", id="empty-item"),
    pytest.param("0-15:0/4", "used <= group", id="zero-used"),
    pytest.param("0-15:5/4", "used <= group", id="used-over-group"),
    pytest.param("0-3:2", "used/group", id="stride-without-group"),
    pytest.param("99999999999999999999999", "too large", id="huge"),
    pytest.param("2000000", "maximum", id="over-max"),
    pytest.param("0x3", "not a CPU number", id="hex-in-list"),
]


@pytest.mark.parametrize(("text", "message"), REJECTED_LISTS)
def test_rejects_bad_lists(text: str, message: str) -> None:
    with pytest.raises(CpuSetError) as caught:
        CpuSet.parse_list(text)
    assert message in str(caught.value)
    assert caught.value.text == text
    assert isinstance(caught.value, KataNumaError)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("text", ["fg", "ff,,ff", "123456789", "+f", " f f", "ff,"])
def test_rejects_bad_masks(text: str) -> None:
    with pytest.raises(CpuSetError):
        CpuSet.parse_mask(text)


def test_error_position_points_at_the_bad_item() -> None:
    with pytest.raises(CpuSetError) as caught:
        CpuSet.parse_list("0-3,8,1x")
    assert caught.value.position == 6


def test_canonical_output_is_shortest_list() -> None:
    assert str(CpuSet([0, 1, 2, 3, 5, 7, 8])) == "0-3,5,7-8"
    assert CpuSet("0-15:2/4").to_list() == "0-1,4-5,8-9,12-13"
    assert CpuSet().to_list() == ""
    assert repr(CpuSet("1-2")) == "CpuSet('1-2')"


def test_algebra_operators() -> None:
    a, b = CpuSet("0-7"), CpuSet("4-11")
    assert a | b == CpuSet("0-11")
    assert a & b == CpuSet("4-7")
    assert a - b == CpuSet("0-3")
    assert a ^ b == CpuSet("0-3,8-11")
    assert CpuSet("1-2") <= a and CpuSet("1-2") < a and not a < a
    assert a >= CpuSet("3") and a != b
    assert 5 in a and 9 not in a and -1 not in a
    assert len(a) == 8 and bool(CpuSet()) is False
    assert a.first() == 0 and b.last() == 11 and CpuSet().first() is None
    assert {CpuSet("0-3"), CpuSet([0, 1, 2, 3])} == {CpuSet("0-3")}
    assert pickle.loads(pickle.dumps(b)) == b


def test_rejects_out_of_range_members() -> None:
    with pytest.raises(ValueError):
        CpuSet([-1])


cpu_sets = st.sets(st.integers(min_value=0, max_value=8191), max_size=300)


@given(cpu_sets)
def test_list_round_trip(cpus: set[int]) -> None:
    text = CpuSet(cpus).to_list()
    assert text == ref_to_list(cpus)
    assert set(CpuSet.parse_list(text)) == cpus


@given(cpu_sets)
def test_mask_round_trip(cpus: set[int]) -> None:
    mask = CpuSet(cpus).to_mask()
    assert mask == ref_to_mask(cpus)
    assert set(CpuSet.parse_mask(mask)) == cpus
    assert CpuSet.parse_mask(mask) == CpuSet.parse_list(CpuSet.parse_mask(mask).to_list())


@given(
    st.integers(0, 4000),
    st.integers(0, 300),
    st.integers(1, 16).flatmap(lambda g: st.tuples(st.integers(1, g), st.just(g))),
)
def test_strides_match_reference(first: int, length: int, stride: tuple[int, int]) -> None:
    text = f"{first}-{first + length}:{stride[0]}/{stride[1]}"
    assert set(CpuSet.parse_list(text)) == ref_parse_list(text)


@given(cpu_sets, cpu_sets)
def test_algebra_matches_python_sets(a: set[int], b: set[int]) -> None:
    x, y = CpuSet(a), CpuSet(b)
    assert set(x | y) == a | b
    assert set(x & y) == a & b
    assert set(x - y) == a - b
    assert set(x ^ y) == a ^ b
    assert (x <= y) == (a <= b)
    assert x.isdisjoint(y) == a.isdisjoint(b)
    assert len(x) == len(a)
    assert (x == y) == (a == b)
