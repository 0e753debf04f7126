"""Key ranges follow etcd: single key, [key, range_end), "from key" with b"\\0", and prefix ends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.kv import FROM_KEY, key_in_range, prefix_end


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        (b"a", b"b"),
        (b"abc", b"abd"),
        (b"a\xff", b"b"),
        (b"a\xff\xff", b"b"),
        (b"\x00", b"\x01"),
        (b"\xfe", b"\xff"),
        (b"\xff", FROM_KEY),
        (b"\xff\xff", FROM_KEY),
        (b"", FROM_KEY),
    ],
)
def test_prefix_end_increments_the_last_byte_below_0xff(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


@pytest.mark.parametrize(
    ("candidate", "key", "range_end", "inside"),
    [
        (b"a", b"a", None, True),
        (b"ab", b"a", None, False),
        (b"a", b"a", b"", True),  # an empty range_end is "unset": the single key
        (b"a", b"a", b"c", True),
        (b"b\xff", b"a", b"c", True),
        (b"c", b"a", b"c", False),  # half-open
        (b"0", b"a", b"c", False),
        (b"zzz", b"a", FROM_KEY, True),
        (b"a", b"a", FROM_KEY, True),
        (b"0", b"a", FROM_KEY, False),
        (b"b", b"c", b"a", False),  # range_end below key: empty range
    ],
)
def test_key_in_range(candidate: bytes, key: bytes, range_end: bytes | None, inside: bool) -> None:
    assert key_in_range(candidate, key, range_end) is inside


@given(st.binary(max_size=4), st.binary(max_size=6))
def test_prefix_range_selects_exactly_the_keys_with_that_prefix(prefix: bytes, candidate: bytes) -> None:
    if not prefix:
        assert key_in_range(candidate, prefix, prefix_end(prefix))
    else:
        assert key_in_range(candidate, prefix, prefix_end(prefix)) == candidate.startswith(prefix)
