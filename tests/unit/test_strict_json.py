"""The strict parser's fast path (orjson) never takes a document the standard library's checked
parser would judge otherwise: same value, or the same refusal with the same message."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.strict_json import StrictJSONError, _checked_loads, loads


def _verdict(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "value", parse(raw)
    except StrictJSONError as exc:
        return "refused", str(exc)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "a": 2}',
        b'{"a" : 1, "b": {"a": 2, "a" :3}}',  # whitespace before the colon
        b'{"\\u0061": 1, "a": 2}',  # one key written two ways
        b'{"s": "x\\" : y", "a": 1, "a": 2}',  # a key-like colon inside a string
        b'{"n": 9223372036854775808}',  # orjson keeps it as an int
        b'{"n": -9223372036854775809}',  # orjson turns it into a float
        b'{"n": 18446744073709551616}',
        b'{"n": 1e400}',
        b'{"n": NaN}',
        b"\xef\xbb\xbf{}",
        b'{"s": "\xc3\x28"}',
        b'"\\ud800"',
        b"[" * 1000 + b"]" * 1000,  # within orjson's depth limit (1,024), beyond the checked parser's
        b"[" * 250 + b"]" * 250,
        b'{"n": 1.0e-400, "m": -0, "f": 9.2e18}',
    ],
)
def test_what_orjson_would_change_gets_the_checked_verdict(raw: bytes) -> None:
    assert _verdict(loads, raw) == _verdict(_checked_loads, raw)


def test_a_duplicate_key_is_refused_however_it_is_spaced() -> None:
    # Two members parsed, two keys ending `":`: only the spaced one tells of the third.
    with pytest.raises(StrictJSONError, match="duplicate key 'a'"):
        loads(b'{"a"\n\t :1,"a":2,"b":3}')


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**66), max_value=2**66),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_keys = st.sampled_from(["a", "b", "\\u0061", 'q\\"', "\\" + "n"])
_space = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])


@st.composite
def _documents(draw: st.DrawFn, depth: int = 0) -> str:
    """JSON text, perhaps with repeated keys (spelled alike or escaped), odd spacing, huge numbers."""
    kind = draw(st.sampled_from(["scalar", "list", "object"] if depth < 3 else ["scalar"]))
    if kind == "scalar":
        return json.dumps(draw(_scalars))  # integers of any size, as digits
    if kind == "list":
        items = draw(st.lists(_documents(depth + 1), max_size=3))
        return "[" + ",".join(draw(_space) + item for item in items) + "]"
    members = draw(st.lists(st.tuples(_keys, _documents(depth + 1)), max_size=4))
    return "{" + ",".join(f'"{k}"{draw(_space)}:{draw(_space)}{v}' for k, v in members) + "}"


@settings(max_examples=400, deadline=None)
@given(_documents())
def test_the_fast_path_agrees_with_the_checked_parser(text: str) -> None:
    raw = text.encode()
    assert _verdict(loads, raw) == _verdict(_checked_loads, raw)
