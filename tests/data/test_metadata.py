"""metadata.jsonl reading, writing and whole-dataset checking."""

import json

import numpy as np
import pytest
from PIL import Image

from gan.data.audio import write_wav
from gan.data.metadata import (check_dataset, read_metadata, read_metadata_numbered,
                               split_fingerprint, write_metadata)
from gan.data.shapes import write_shapes
from gan.errors import GanError


def write_lines(split, lines):
    split.mkdir(parents=True, exist_ok=True)
    (split / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_round_trip_keeps_rows_and_unicode(tmp_path):
    rows = [{"file_name": "images/a.png", "text": "a bird — red wings, ünïcode", "x": [1, 2]},
            {"file_name": "b.jpg", "text": "x", "audio_file": "audio/b.wav"}]
    write_metadata(tmp_path / "train", rows)
    assert read_metadata(tmp_path / "train") == rows
    assert [n for n, _ in read_metadata_numbered(tmp_path / "train")] == [1, 2]
    write_metadata(tmp_path / "train", rows[:1])  # replaces, leaves no temp file behind
    assert read_metadata(tmp_path / "train") == rows[:1]
    assert [p.name for p in (tmp_path / "train").iterdir()] == ["metadata.jsonl"]


def test_write_metadata_rejects_bad_rows_and_keeps_the_old_file(tmp_path):
    write_metadata(tmp_path, [{"file_name": "a.png", "text": "ok"}])
    with pytest.raises(GanError, match="row 1.*text"):
        write_metadata(tmp_path, [{"file_name": "a.png", "text": "ok"},
                                  {"file_name": "b.png", "text": "  "}])
    assert read_metadata(tmp_path) == [{"file_name": "a.png", "text": "ok"}]


def test_bad_lines_are_all_reported_with_line_numbers(tmp_path):
    split = tmp_path / "train"
    write_lines(split, [
        '{"file_name": "a.png", "text": "fine"}',
        '{"file_name": "b.png", "text": "broken',  # 2: bad JSON
        '{"file_name": "c.png", "text": "fine"}',
        '{"file_name": "d.png", "text": ""}',  # 4: empty caption
        '["not", "an", "object"]',  # 5
        '{"text": "no file"}',  # 6
        '{"file_name": 7, "text": "number"}',  # 7
        '{"file_name": "h.png", "text": " \\t "}',  # 8: whitespace-only caption
        '',  # blank lines are skipped, not errors
        '{"file_name": "j.png"}',  # 10: no text
    ])
    with pytest.raises(GanError) as err:
        read_metadata(split)
    msg = str(err.value)
    path = split / "metadata.jsonl"
    expected = [(2, "invalid JSON"), (4, "text"), (5, "JSON object"),
                (6, "missing \"file_name\""), (7, "file_name"), (8, "text"),
                (10, "missing \"text\"")]
    for line, what in expected:
        assert f"{path}:{line}: " in msg and what in msg.split(f"{path}:{line}: ")[1].split("\n")[0]
    for line in (1, 3, 9):
        assert f"{path}:{line}:" not in msg
    assert msg.startswith("7 bad line(s)")


def test_many_bad_lines_are_summarised(tmp_path):
    write_lines(tmp_path, ["{bad"] * 25)
    with pytest.raises(GanError, match=r"\.\.\. and 5 more") as err:
        read_metadata(tmp_path)
    assert ":20: " in str(err.value) and ":21: " not in str(err.value)


def test_missing_folder_file_or_rows(tmp_path):
    with pytest.raises(GanError, match="split folder not found: .*nowhere.*metadata.jsonl"):
        read_metadata(tmp_path / "nowhere")
    with pytest.raises(GanError, match="no metadata.jsonl in .*expected a split folder"):
        read_metadata(tmp_path)
    write_lines(tmp_path, [""])
    with pytest.raises(GanError, match="has no rows"):
        read_metadata(tmp_path)


def small_dataset(root, n=6, size=8):
    """A valid root/train split with n PNGs and WAVs, one row each."""
    split = root / "train"
    (split / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (size, size), (i * 30, 10, 200)).save(split / "img" / f"{i}.png")
        write_wav(split / "snd" / f"{i}.wav", np.zeros(160, np.float32), 16000)
        rows.append({"file_name": f"img/{i}.png", "text": f"picture {i}",
                     "audio_file": f"snd/{i}.wav"})
    write_metadata(split, rows)
    return split


def test_check_dataset_valid(tmp_path):
    split = small_dataset(tmp_path)
    assert check_dataset(tmp_path) == []
    assert check_dataset(tmp_path, resolution=8) == []
    assert check_dataset(split, resolution=8) == []  # a split folder works too


def test_check_dataset_reports_each_problem_with_its_line(tmp_path):
    split = small_dataset(tmp_path)
    (split / "img" / "1.png").unlink()  # line 2: missing image
    png = (split / "img" / "2.png").read_bytes()
    (split / "img" / "2.png").write_bytes(png[: len(png) // 2])  # line 3: truncated PNG
    Image.new("RGB", (9, 8)).save(split / "img" / "3.png")  # line 4: wrong size
    (split / "snd" / "4.wav").unlink()  # line 5: missing WAV
    (split / "snd" / "5.wav").write_bytes(b"garbage" * 20)  # line 6: unreadable WAV
    with open(split / "metadata.jsonl", "a") as f:
        f.write('{"file_name": "img/0.png", "text": ""}\n')  # line 7: empty caption

    problems = check_dataset(tmp_path, resolution=8)
    by_line = {p.split(":")[1]: p for p in problems}
    assert all(p.startswith("train/metadata.jsonl:") for p in problems), problems
    assert sorted(by_line, key=int) == ["2", "3", "4", "5", "6", "7"], problems
    assert "image file not found" in by_line["2"] and "1.png" in by_line["2"]
    assert "unreadable image" in by_line["3"] and "2.png" in by_line["3"]
    assert "is 9x8, expected 8x8" in by_line["4"]
    assert "audio file not found" in by_line["5"] and "4.wav" in by_line["5"]
    assert "cannot read audio file" in by_line["6"] and "5.wav" in by_line["6"]
    assert "text" in by_line["7"]
    # Without a resolution, size is not a problem.
    assert not [p for p in check_dataset(tmp_path) if ":4:" in p]


def test_check_dataset_on_a_folder_without_metadata(tmp_path):
    problems = check_dataset(tmp_path)
    assert len(problems) == 1 and "no metadata.jsonl" in problems[0]
    assert "not a folder" in check_dataset(tmp_path / "missing")[0]


def test_check_dataset_accepts_generated_shapes(tmp_path):
    write_shapes(tmp_path / "s", 8, 4, size=32, seed=1, progress=False)
    assert check_dataset(tmp_path / "s", resolution=32) == []
    problems = check_dataset(tmp_path / "s", resolution=64)
    assert len(problems) == 12 and "expected 64x64" in problems[0]
    assert {p.split("/")[0] for p in problems} == {"train", "test"}


def test_split_fingerprint_follows_the_metadata(tmp_path):
    write_metadata(tmp_path, [{"file_name": "a.png", "text": "one"}])
    first = split_fingerprint(tmp_path)
    assert len(first) == 16 and int(first, 16) >= 0
    assert split_fingerprint(tmp_path) == first
    write_metadata(tmp_path, [{"file_name": "a.png", "text": "two"}])
    assert split_fingerprint(tmp_path) != first
    with pytest.raises(GanError, match="not found"):
        split_fingerprint(tmp_path / "nope")
    assert json.loads((tmp_path / "metadata.jsonl").read_text())["text"] == "two"
