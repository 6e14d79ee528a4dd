"""The byte-level nesting check agrees with walking the parsed value, whatever the strings hold."""

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds.web.body import depth_exceeds, nesting_exceeds

# Strings full of the characters the byte-level check has to see through.
TRICKY_TEXT = st.text(alphabet='[]{}"\\/,:ab\n\u00e9', max_size=8)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TRICKY_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TRICKY_TEXT, children, max_size=3),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(JSON, st.integers(min_value=1, max_value=12))
def test_nesting_check_on_bytes_matches_the_walk_of_the_value(value, max_depth):
    assert nesting_exceeds(orjson.dumps(value), max_depth) == depth_exceeds(value, max_depth)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"1", 0),
        (b"{}", 1),
        (b'{"a": [{"b": "[[[{{{"}]}', 3),
        (b'{"a\\"[": ["\\\\", {"c": []}]}', 4),
        (b'[[], [[]], "]]]]"]', 3),
    ],
)
def test_nesting_depth_is_exact(text, depth):
    assert nesting_exceeds(text, depth) is False
    if depth:
        assert nesting_exceeds(text, depth - 1) is True
