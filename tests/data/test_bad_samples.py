"""Bad training samples: `--on-bad-sample error` names every broken file, `skip` drops exactly
those rows (the dataset, and so every consumer of its indices) and reports them."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gan.cli import build_parser
from gan.config import Config, load_config
from gan.data.audio import write_wav
from gan.data.bad_samples import REPORT_FILE, BadSamplePolicy
from gan.data.dataset import ImageTextDataset, load_image
from gan.data.metadata import MAX_CAPTION_CHARS, write_metadata
from gan.errors import GanError

pytestmark = pytest.mark.usefixtures("one_thread")

R = 16
N = 9


def make_split(root, n=N, audio=False):
    """root/train with n noise PNGs (distinct, so a wrong row-to-image mapping shows) and WAVs."""
    split = root / "train"
    (split / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (R, R, 3), dtype=np.uint8)).save(split / "img" / f"{i}.png")
        row = {"file_name": f"img/{i}.png", "text": f"picture {i}"}
        if audio:
            write_wav(split / "snd" / f"{i}.wav", np.full(1600, 0.1, np.float32), 16000)
            row["audio_file"] = f"snd/{i}.wav"
        rows.append(row)
    write_metadata(split, rows)
    return split


def set_line(split, number, data: bytes):
    lines = (split / "metadata.jsonl").read_bytes().split(b"\n")
    lines[number - 1] = data
    (split / "metadata.jsonl").write_bytes(b"\n".join(lines))


def corrupt(split, audio=False) -> dict[int, list[str]]:
    """Break rows 2-6 (and 7's sound with audio); metadata line -> what its problem must say."""
    png = (split / "img" / "1.png").read_bytes()
    (split / "img" / "1.png").write_bytes(png[: len(png) * 2 // 3])  # cut inside the pixel data
    (split / "img" / "2.png").write_bytes(b"")
    (split / "img" / "3.png").write_bytes(b"this is no picture " * 10)
    set_line(split, 5, b'{"file_name": "img/4.png", "text": "caf\xe9 au lait"}')  # Latin-1, not UTF-8
    set_line(split, 6, json.dumps({"file_name": "img/5.png", "text": "x" * 1_000_000}).encode())
    expected = {2: ["cannot read image", "1.png"], 3: ["2.png", "is empty (0 bytes)"],
                4: ["cannot read image", "3.png"], 5: ["not valid UTF-8"],
                6: ["1,000,000 characters", f"capped at {MAX_CAPTION_CHARS:,}"]}
    if audio:
        wav = (split / "snd" / "6.wav").read_bytes()
        (split / "snd" / "6.wav").write_bytes(wav[: len(wav) // 2])
        expected[7] = ["6.wav", "is truncated"]
    return expected


def problem_lines(text: str, split) -> dict[int, str]:
    prefix = f"{split / 'metadata.jsonl'}:"
    return {int(line[len(prefix):].split(":")[0]): line for line in text.splitlines() if line.startswith(prefix)}


def assert_named(found: dict[int, str], expected: dict[int, list[str]]):
    assert sorted(found) == sorted(expected), found
    for line, words in expected.items():
        assert all(w in found[line] for w in words), (line, found[line])


@pytest.mark.parametrize("audio", [False, True])
def test_error_mode_names_every_bad_file_and_line(tmp_path, audio):
    split = make_split(tmp_path, audio=audio)
    expected = corrupt(split, audio)
    with pytest.raises(GanError) as err:
        ImageTextDataset(split, R, bad_samples=BadSamplePolicy("error", audio=audio))
    msg = str(err.value)
    assert msg.startswith(f"{len(expected)} of {N} rows of {split / 'metadata.jsonl'} are bad")
    assert "--on-bad-sample skip" in msg and len(msg) < 5000  # the 1 MB caption is not echoed
    assert_named(problem_lines(msg, split), expected)


def test_error_is_the_default(tmp_path):
    split = make_split(tmp_path)
    corrupt(split)
    with pytest.raises(GanError, match="5 of 9 rows"):
        ImageTextDataset(split, R)


@pytest.mark.parametrize("preload", [True, False])
@pytest.mark.parametrize("audio", [False, True])
def test_skip_drops_exactly_the_bad_rows(tmp_path, capsys, preload, audio):
    split = make_split(tmp_path, audio=audio)
    expected = corrupt(split, audio)
    run = tmp_path / "run"
    ds = ImageTextDataset(split, R, preload=preload, bad_samples=BadSamplePolicy("skip", audio, run))
    good = [n for n in range(1, N + 1) if n not in expected]
    assert ds.lines == good and len(ds) == len(good)
    assert ds.texts == [f"picture {n - 1}" for n in good]
    assert ds.preloaded == preload and (ds.images is None) == (not preload)
    for i, n in enumerate(good):  # item i is row i's own picture, after the dropped rows
        want = torch.from_numpy(load_image(split / "img" / f"{n - 1}.png", R).copy()).permute(2, 0, 1)
        assert ds[i]["index"] == i and torch.equal(ds[i]["image"], want.float() / 127.5 - 1)
    assert_named(problem_lines("\n".join(ds.skipped), split), expected)

    out = capsys.readouterr().out
    assert f"skipped {len(expected)} of {N} rows of {split / 'metadata.jsonl'}" in out
    assert f"full list in {run / REPORT_FILE}" in out
    assert_named(problem_lines(out, split), expected)
    report = (run / REPORT_FILE).read_text()
    assert report.startswith(f"# skipped {len(expected)} of {N} rows")
    assert_named(problem_lines(report, split), expected)


def test_skip_drops_every_row_of_a_shared_bad_image(tmp_path):
    split = make_split(tmp_path, n=2)
    write_metadata(split, [{"file_name": "img/0.png", "text": t} for t in ("one", "two")]
                   + [{"file_name": "img/1.png", "text": "three"}, {"file_name": "img/0.png", "text": "four"}])
    (split / "img" / "0.png").write_bytes(b"")
    ds = ImageTextDataset(split, R, bad_samples=BadSamplePolicy("skip", announce=False))
    assert ds.texts == ["three"] and ds.lines == [3] and ds.images.shape == (1, 3, R, R)
    assert len(ds.skipped) == 3


def test_many_problems_are_listed_up_to_twenty_and_filed_in_full(tmp_path, capsys):
    split = make_split(tmp_path, n=26)
    for i in range(1, 26):
        (split / "img" / f"{i}.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(GanError, match=r"25 of 26 rows.*\n(.*\n){20}\.\.\. and 5 more$"):
        ImageTextDataset(split, R)
    ds = ImageTextDataset(split, R, bad_samples=BadSamplePolicy("skip", report_dir=tmp_path / "run"))
    assert len(ds) == 1 and len(ds.skipped) == 25
    out = capsys.readouterr().out
    assert len(problem_lines(out, split)) == 20 and "... and 5 more" in out
    assert len(problem_lines((tmp_path / "run" / REPORT_FILE).read_text(), split)) == 25


def test_an_entirely_bad_split_is_still_an_error(tmp_path):
    split = make_split(tmp_path, n=3)
    for i in range(3):
        (split / "img" / f"{i}.png").write_bytes(b"")
    set_line(split, 2, b"{not json")
    with pytest.raises(GanError, match=r"all 3 rows of .*metadata.jsonl are bad; nothing is left") as err:
        ImageTextDataset(split, R, bad_samples=BadSamplePolicy("skip", report_dir=tmp_path / "run"))
    assert_named(problem_lines(str(err.value), split),
                 {1: ["0.png", "empty"], 2: ["invalid JSON"], 3: ["2.png", "empty"]})
    assert not (tmp_path / "run" / REPORT_FILE).exists()


def test_a_clean_split_removes_a_stale_report_and_only_the_main_process_reports(tmp_path, capsys):
    split = make_split(tmp_path, n=3)
    run = tmp_path / "run"
    (split / "img" / "1.png").write_bytes(b"")
    ImageTextDataset(split, R, bad_samples=BadSamplePolicy("skip", report_dir=run, announce=False))
    assert capsys.readouterr().out == "" and not (run / REPORT_FILE).exists()  # not the main process
    ImageTextDataset(split, R, bad_samples=BadSamplePolicy("skip", report_dir=run))
    assert (run / REPORT_FILE).is_file()
    Image.new("RGB", (R, R)).save(split / "img" / "1.png")  # fixed: the old report would mislead
    assert len(ImageTextDataset(split, R, bad_samples=BadSamplePolicy("skip", report_dir=run))) == 3
    assert not (run / REPORT_FILE).exists()


def test_audio_is_checked_only_when_asked(tmp_path):
    split = make_split(tmp_path, n=3, audio=True)
    (split / "snd" / "1.wav").write_bytes(b"RIFF garbage")
    assert len(ImageTextDataset(split, R)) == 3  # an image-only model never reads the sound
    with pytest.raises(GanError, match=r"metadata.jsonl:2: cannot read audio file .*1.wav"):
        ImageTextDataset(split, R, bad_samples=BadSamplePolicy(audio=True))
    write_metadata(split, [{"file_name": "img/0.png", "text": "no sound"}])
    with pytest.raises(GanError, match=r"metadata.jsonl:1: no \"audio_file\""):
        ImageTextDataset(split, R, bad_samples=BadSamplePolicy(audio=True))


def test_policy_from_config_and_bad_mode(tmp_path):
    cfg = load_config(None, ["data.on_bad_sample=skip", 'condition.modalities=["text", "audio"]'])
    policy = BadSamplePolicy.from_config(cfg, tmp_path, announce=False)
    assert (policy.mode, policy.audio, policy.report_dir, policy.announce) == ("skip", True, tmp_path, False)
    assert not BadSamplePolicy.from_config(Config()).audio and Config().data.on_bad_sample == "error"
    with pytest.raises(GanError, match="on_bad_sample.*'error' or 'skip'.*'ignore'"):
        BadSamplePolicy("ignore")
    with pytest.raises(GanError, match="data.on_bad_sample.*'error' or 'skip'"):
        load_config(None, ["data.on_bad_sample=ignore"])


def test_the_train_flag_sets_the_config(tmp_path, monkeypatch):
    import gan.training.trainer as trainer

    seen = {}
    monkeypatch.setattr(trainer, "train", lambda cfg, resume=None: seen.setdefault("cfg", cfg) and tmp_path)
    config = tmp_path / "c.toml"
    config.write_text('name = "x"\n')
    args = build_parser().parse_args(["train", "--config", str(config), "--on-bad-sample", "skip"])
    args.func(args)
    assert seen["cfg"].data.on_bad_sample == "skip"
    with pytest.raises(SystemExit):  # argparse refuses other words before anything runs
        build_parser().parse_args(["train", "--config", str(config), "--on-bad-sample", "maybe"])


def test_audio_bank_of_a_different_subset_is_not_reused(tmp_path):
    from gan.data.audio_bank import audio_bank

    split = make_split(tmp_path, n=3, audio=True)
    write_wav(split / "snd" / "2.wav", np.full(1600, -0.5, np.float32), 16000)
    rows = [json.loads(line) for line in (split / "metadata.jsonl").read_text().splitlines()]
    first = audio_bank(split, rows[:2], progress=False)  # e.g. row 3 was skipped on one run ...
    other = audio_bank(split, [rows[0], rows[2]], progress=False)  # ... and row 2 on the next
    assert first.shape == other.shape == (2, 16000)
    assert first[1, 0] > 0 and other[1, 0] < 0  # each bank holds its own rows' sounds


def test_hostile_metadata_lines_are_bad_lines_not_crashes(tmp_path):
    split = make_split(tmp_path, n=6)
    set_line(split, 1, b'\xef\xbb\xbf{"file_name": "img/0.png", "text": "a BOM first, as Notepad writes"}')
    set_line(split, 2, b'{"file_name": "img/1\\u0000.png", "text": "x"}')
    set_line(split, 3, b'{"file_name": "img/2.png", "text": "half a pair \\ud800"}')
    set_line(split, 4, b'{"file_name": "img/3.png", "text": "x", "n": ' + b"9" * 5000 + b"}")
    set_line(split, 5, b"[" * 5000)
    ds = ImageTextDataset(split, R, bad_samples=BadSamplePolicy("skip", announce=False))
    assert ds.lines == [1, 6] and ds.texts[0] == "a BOM first, as Notepad writes"
    assert_named(problem_lines("\n".join(ds.skipped), split),
                 {2: ["NUL"], 3: ["surrogate"], 4: ["invalid JSON", "4300 digits"], 5: ["invalid JSON", "recursion"]})
