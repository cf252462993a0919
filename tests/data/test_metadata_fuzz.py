"""Fuzzing the metadata.jsonl reader: any bytes give rows or a GanError, never another exception,
and every row write_metadata accepts reads back unchanged.

The runs are derandomized (the same examples every time) so the suite cannot flake; for a deeper
hunt raise max_examples and drop derandomize locally.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gan.data.bad_samples import BadSamplePolicy, Screening
from gan.data.metadata import MAX_CAPTION_CHARS, read_metadata, scan_metadata, write_metadata
from gan.errors import GanError

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
# Lines that look like rows: real keys with odd values, cut short, or with hostile escapes.
row_like = st.fixed_dictionaries({}, optional={"file_name": json_values, "text": json_values,
                                               "audio_file": json_values, "extra": json_values})
hostile = st.sampled_from([b'{"file_name": "a\\u0000.png", "text": "x"}', b'{"file_name": "a.png", "text": "\\ud800"}',
                           b"[" * 5000, b'{"file_name": "a.png", "text": "x", "n": ' + b"9" * 5000 + b"}",
                           b"\xef\xbb\xbf{}", b"\xff\xfe{", b'{"file_name": "a.png", "text": "x"}\r'])


@st.composite
def lines(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "row", "cut", "hostile"]))
    if kind == "bytes":
        return draw(st.binary(max_size=80)).replace(b"\n", b" ")
    if kind == "hostile":
        return draw(hostile)
    line = json.dumps(draw(row_like), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    return line[: draw(st.integers(0, len(line)))] if kind == "cut" else line


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(st.lists(lines(), max_size=8))
def test_any_bytes_give_rows_or_a_gan_error(split, content):
    data = b"\n".join(content)
    (split / "metadata.jsonl").write_bytes(data)
    rows, problems = scan_metadata(split)
    data = data.removeprefix(b"\xef\xbb\xbf")  # a leading BOM is not part of the first line
    assert len(rows) + len(problems) == sum(1 for line in data.split(b"\n") if line.strip())
    for _, row in rows:
        assert row["file_name"].strip() and 0 < len(row["text"].strip()) <= MAX_CAPTION_CHARS
        json.dumps(row, ensure_ascii=False).encode("utf-8")  # usable downstream: no surrogates
    try:
        assert read_metadata(split) == [row for _, row in rows]
    except GanError:
        assert problems or not rows
    try:  # skip mode over the same lines: the valid rows, or a GanError when none is valid
        kept = Screening(split, BadSamplePolicy("skip", announce=False)).settle()
        assert kept == rows
    except GanError:
        assert not rows


names = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() and "\x00" not in s)
captions = st.text(min_size=1, max_size=200).filter(lambda s: s.strip() and "\x00" not in s)
valid_rows = st.fixed_dictionaries({"file_name": names, "text": captions},
                                   optional={"audio_file": names, "extra": json_values})


@FUZZ
@given(st.lists(valid_rows, min_size=1, max_size=5))
def test_valid_rows_round_trip(split, rows):
    try:
        write_metadata(split, rows)
    except GanError as e:  # only NaN in "extra" may be refused (not JSON)
        assert "cannot be written as JSON" in str(e)
        return
    assert read_metadata(split) == rows


@FUZZ
@given(st.lists(row_like, min_size=1, max_size=4))
def test_write_metadata_accepts_or_refuses_cleanly(split, rows):
    try:
        write_metadata(split, rows)
    except GanError:
        return
    assert read_metadata(split) == rows
