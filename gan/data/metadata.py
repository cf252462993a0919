"""The dataset format: a split folder with images and a metadata.jsonl (HuggingFace imagefolder).

    my_data/
      train/
        metadata.jsonl      {"file_name": "images/0001.png", "text": "a small bird ...", ...}
        images/0001.png
      test/
        metadata.jsonl
        ...

Every line is one JSON object with at least `file_name` (relative to the split folder) and
`text` (a non-empty caption of at most MAX_CAPTION_CHARS characters). `audio_file` (relative path to a sound) is optional; any other
keys are kept and ignored. Nothing here is specific to the shapes dataset, so CUB or COCO
converted to this layout work unchanged.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from gan.errors import GanError

METADATA = "metadata.jsonl"
LAYOUT = ("expected a split folder holding metadata.jsonl (one JSON object per line with "
          "\"file_name\" and \"text\") next to the files it names, e.g. DATA/train/metadata.jsonl")
MAX_LISTED = 20
# Longer captions are rejected: encoders keep a few hundred tokens, and a runaway caption (a whole
# file pasted into one field) would only cost memory and tokenizer time.
MAX_CAPTION_CHARS = 10_000


def _string_problem(key: str, value) -> str | None:
    """Why `value` cannot be the row's `key` (file_name, text), or None when it can."""
    if not isinstance(value, str) or not value.strip():
        what = "a non-empty caption" if key == "text" else "a non-empty string"
        return f"\"{key}\" must be {what}, got {_short(value)}"
    if "\x00" in value:  # the OS refuses such paths, and no caption needs one
        return f"\"{key}\" contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON escapes like "\ud800" decode to unpaired surrogates
        return f"\"{key}\" contains an unpaired UTF-16 surrogate (not valid Unicode text)"
    if key == "text" and len(value) > MAX_CAPTION_CHARS:
        return (f"\"text\" is {len(value):,} characters; captions are capped at {MAX_CAPTION_CHARS:,} "
                "(text encoders read only the first few hundred tokens)")
    return None


def _short(value, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters so a huge value cannot flood the message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def _row_problem(line: bytes) -> tuple[dict | None, str | None]:
    """Parse one metadata line: (row, None) when valid, (None, what is wrong) otherwise."""
    try:
        row = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e.msg} at column {e.colno})"
    except (ValueError, RecursionError) as e:  # an integer over 4300 digits, arrays nested 1000 deep
        return None, f"invalid JSON ({str(e).split(';')[0]})"
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    if "file_name" not in row:
        return None, "missing \"file_name\" (path of the image, relative to the split folder)"
    if "text" not in row:
        return None, "missing \"text\" (the caption)"
    problem = _string_problem("file_name", row["file_name"]) or _string_problem("text", row["text"])
    return (None, problem) if problem else (row, None)


def _scan(split_dir: Path) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """All (line number, row) pairs and all (line number, problem) pairs of a metadata file."""
    path = split_dir / METADATA
    data = path.read_bytes()
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # a BOM, as Windows editors write
    rows, problems = [], []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():  # blank lines (and the final newline) carry no row
            continue
        row, problem = _row_problem(line)
        if problem:
            problems.append((number, problem))
        else:
            rows.append((number, row))
    return rows, problems


def listing(problems: list[str]) -> str:
    """The first MAX_LISTED problems, one per line, and how many more there are."""
    shown = problems[:MAX_LISTED]
    if len(problems) > MAX_LISTED:
        shown.append(f"... and {len(problems) - MAX_LISTED} more")
    return "\n".join(shown)


def _require_split(split_dir: str | Path) -> Path:
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise GanError(f"dataset split folder not found: {split_dir} ({LAYOUT})")
    if not (split_dir / METADATA).is_file():
        raise GanError(f"no {METADATA} in {split_dir} ({LAYOUT})")
    return split_dir


def scan_metadata(split_dir: str | Path) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """Every valid (line number, row) of split_dir/metadata.jsonl and a (line number, problem) for
    every bad line, without raising for bad lines (training's skip mode drops them)."""
    return _scan(_require_split(split_dir))


def read_metadata_numbered(split_dir: str | Path) -> list[tuple[int, dict]]:
    """Like read_metadata, but each row comes with its 1-based line number in metadata.jsonl."""
    split_dir = _require_split(split_dir)
    rows, problems = _scan(split_dir)
    if problems:
        path = split_dir / METADATA
        raise GanError(f"{len(problems)} bad line(s) in {path}:\n"
                       + listing([f"{path}:{n}: {p}" for n, p in problems]))
    if not rows:
        raise GanError(f"{split_dir / METADATA} has no rows ({LAYOUT})")
    return rows


def read_metadata(split_dir: str | Path) -> list[dict]:
    """Parse split_dir/metadata.jsonl into a list of rows; GanError lists every bad line."""
    return [row for _, row in read_metadata_numbered(split_dir)]


def write_metadata(split_dir: str | Path, rows: list[dict]) -> None:
    """Write rows to split_dir/metadata.jsonl atomically (temp file, then os.replace)."""
    split_dir = Path(split_dir)
    lines = []
    for i, row in enumerate(rows):
        try:  # allow_nan=False: NaN is not JSON, and other readers (HF datasets) reject it
            line = json.dumps(row, ensure_ascii=False, allow_nan=False)
            _, problem = _row_problem(line.encode("utf-8"))
        except (TypeError, ValueError) as e:  # not serialisable, circular, or unencodable text
            problem = f"cannot be written as JSON ({e})"
        if problem:
            raise GanError(f"write_metadata: row {i} for {split_dir / METADATA}: {problem}")
        lines.append(line + "\n")
    split_dir.mkdir(parents=True, exist_ok=True)
    tmp = split_dir / f".{METADATA}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, split_dir / METADATA)
    finally:
        if tmp.exists():
            tmp.unlink()


def _image_problem(path: Path, resolution: int | None) -> str | None:
    if not path.is_file():
        return f"image file not found: {path}"
    try:
        with Image.open(path) as im:
            im.load()  # open() only reads the header; load() decodes and catches truncation
            size = im.size
    except Exception as e:  # PIL raises many types for bad files; all mean "unreadable"
        return f"unreadable image {path}: {e}"
    if resolution is not None and size != (resolution, resolution):
        return f"image {path} is {size[0]}x{size[1]}, expected {resolution}x{resolution}"
    return None


def audio_problem(split_dir: Path, name) -> str | None:
    """Why split_dir/name is not a usable sound (missing, unreadable, empty, NaN/inf, truncated)."""
    from gan.data.audio import read_wav, wav_truncation  # local: only datasets with sound need soundfile

    if not isinstance(name, str) or not name.strip():
        return f"\"audio_file\" must be a non-empty string, got {_short(name)}"
    path = split_dir / name
    try:
        wave, _ = read_wav(path)
    except GanError as e:
        return str(e)
    if not np.isfinite(wave).all():  # float WAVs can hold them; they would poison the encoder
        return f"audio file {path} contains NaN or inf samples; expected finite sample values"
    return wav_truncation(path)


def _split_dirs(path: Path) -> list[Path]:
    if (path / METADATA).is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and (p / METADATA).is_file())


def check_dataset(path: str | Path, resolution: int | None = None) -> list[str]:
    """Validate a dataset root (holding train/, test/, ...) or one split folder.

    Returns every problem as "split/metadata.jsonl:LINE: ..." (bad rows, missing or unreadable
    images, images not `resolution` x `resolution` when given, missing or unreadable audio_file,
    a video row's clip missing, unreadable or not holding its "frames" count).
    An empty list means the dataset is valid.
    """
    path = Path(path)
    if not path.is_dir():
        return [f"{path}: not a folder ({LAYOUT})"]
    splits = _split_dirs(path)
    if not splits:
        return [f"{path}: no metadata.jsonl here or in any subfolder ({LAYOUT})"]
    problems = []
    for split_dir in splits:
        label = f"{split_dir.name}/{METADATA}"
        rows, bad = _scan(split_dir)
        problems += [f"{label}:{number}: {problem}" for number, problem in bad]
        if not rows and not bad:
            problems.append(f"{label}: no rows")
        for number, row in rows:
            problem = _image_problem(split_dir / row["file_name"], resolution)
            if problem:
                problems.append(f"{label}:{number}: {problem}")
            if "audio_file" in row:
                problem = audio_problem(split_dir, row["audio_file"])
                if problem:
                    problems.append(f"{label}:{number}: {problem}")
            if "clip" in row:
                problem = _clip_problem(split_dir, row)
                if problem:
                    problems.append(f"{label}:{number}: {problem}")
    return problems


def _clip_problem(split_dir: Path, row: dict) -> str | None:
    """Why a video row's "clip" (frame folder or animated file) is not usable."""
    from gan.data.clips import read_clip  # local: gan.data.clips imports this module

    clip, frames = row["clip"], row.get("frames")
    if not isinstance(clip, str) or not clip.strip() or not isinstance(frames, int) or isinstance(frames, bool):
        return f"expected \"clip\" (frame folder name) and \"frames\" (integer), got clip={_short(clip)} " \
               f"frames={_short(frames)}"
    try:
        pixels, _ = read_clip(split_dir / clip)
    except GanError as e:
        return str(e)
    if pixels.shape[0] != frames:
        return f"clip {clip} has {pixels.shape[0]} frames, metadata says {frames}"
    return None


def split_fingerprint(split_dir: str | Path) -> str:
    """A short hex sha256 of split_dir/metadata.jsonl, for cache keys (changes when rows change)."""
    split_dir = _require_split(split_dir)
    return hashlib.sha256((split_dir / METADATA).read_bytes()).hexdigest()[:16]
