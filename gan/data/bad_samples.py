"""What training does with bad samples: config `data.on_bad_sample`, flag `--on-bad-sample`.

A training row is bad when its metadata.jsonl line is (not UTF-8, not a JSON object, no usable
"file_name" or "text", a caption over MAX_CAPTION_CHARS), when its image is missing, empty or
cannot be decoded (video repair: its clip folder is missing, a frame is unreadable, or its frame
count or size differs from the metadata or the other clips, gan.data.clips.ClipDataset), or, for
a model conditioned on audio, when its "audio_file" is missing, unreadable, empty, truncated or
holds NaN/inf samples.

error (the default): training does not start. The message says how many rows are bad and lists the
    first MAX_LISTED problems as `path/metadata.jsonl:LINE: what is wrong`, naming the file.
skip: the bad rows are dropped while the dataset is built, before anything else reads the split,
    so the text-embedding cache, the audio bank and every condition input index the same filtered
    rows. The count and the first MAX_LISTED problems are printed; the full list goes to
    `<run folder>/bad_samples.txt` (REPORT_FILE). A split with no good row left is still an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from gan.data.metadata import LAYOUT, METADATA, audio_problem, listing, scan_metadata
from gan.errors import GanError

MODES = ("error", "skip")
REPORT_FILE = "bad_samples.txt"


@dataclass
class BadSamplePolicy:
    mode: str = "error"  # "error" | "skip"
    audio: bool = False  # also check every row's audio_file (the model is conditioned on audio)
    report_dir: Path | None = None  # skip mode writes REPORT_FILE here (the run folder); None = no file
    announce: bool = True  # print the summary and write the file: the main process only

    def __post_init__(self):
        if self.mode not in MODES:
            raise GanError(f"on_bad_sample: expected 'error' or 'skip', got {self.mode!r}")

    @classmethod
    def from_config(cls, cfg, run_dir: str | Path | None = None, announce: bool = True) -> BadSamplePolicy:
        # Audio conditioning and the joint task read every row's sound (gan.data.audio_bank);
        # unconditioned video repair reads only the frames.
        conditioned = cfg.task != "video-repair" or cfg.repair.conditioned
        audio = ("audio" in cfg.condition.modalities and conditioned) or cfg.task == "joint"
        return cls(cfg.data.on_bad_sample, audio, Path(run_dir) if run_dir is not None else None, announce)


class Screening:
    """The rows of one split and the problems found so far, by metadata line number."""

    def __init__(self, split_dir: str | Path, policy: BadSamplePolicy):
        self.metadata = Path(split_dir) / METADATA
        self.policy = policy
        self.rows, self.problems = scan_metadata(split_dir)  # bad lines are problems already
        self.total = len(self.rows) + len(self.problems)
        if not self.total:
            raise GanError(f"{self.metadata} has no rows ({LAYOUT})")
        self.bad_lines = {number for number, _ in self.problems}
        self.skipped: list[str] = []  # skip mode: every problem of the dropped rows, once settled

    def flag(self, line: int, problem: str) -> None:
        self.bad_lines.add(line)
        self.problems.append((line, problem))

    def good_rows(self) -> list[tuple[int, dict]]:
        return [(n, row) for n, row in self.rows if n not in self.bad_lines]

    def check_audio(self, progress: bool = True) -> None:
        """Decode every good row's audio_file (each file once), flagging rows whose sound is bad."""
        split, seen = self.metadata.parent, {}
        for number, row in tqdm(self.good_rows(), desc=f"checking {split.name} audio", disable=not progress):
            if "audio_file" not in row:
                self.flag(number, "no \"audio_file\" (audio conditioning needs a sound on every row)")
                continue
            name = row["audio_file"]
            key = name if isinstance(name, str) else repr(name)
            if key not in seen:
                seen[key] = audio_problem(split, name)
            if seen[key]:
                self.flag(number, seen[key])

    def settle(self) -> list[tuple[int, dict]]:
        """The rows training keeps; raises in error mode (any problem) or when no row is left."""
        kept = self.good_rows()
        if not self.problems:
            self._clear_report()
            return kept
        problems = [f"{self.metadata}:{n}: {p}" for n, p in sorted(self.problems, key=lambda x: x[0])]
        bad = self.total - len(kept)
        if self.policy.mode == "error":
            raise GanError(f"{bad} of {self.total} rows of {self.metadata} are bad (fix them, or train on "
                           f"the others with --on-bad-sample skip):\n" + listing(problems))
        if not kept:
            raise GanError(f"all {self.total} rows of {self.metadata} are bad; nothing is left to train "
                           f"on:\n" + listing(problems))
        self._report(problems, bad)
        self.skipped = problems
        return kept

    def _report(self, problems: list[str], bad: int) -> None:
        if not self.policy.announce:
            return
        where = ""
        if self.policy.report_dir is not None:
            path = self.policy.report_dir / REPORT_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# skipped {bad} of {self.total} rows of {self.metadata} "
                            f"(data.on_bad_sample = \"skip\")\n" + "\n".join(problems) + "\n", encoding="utf-8")
            where = f"; full list in {path}"
        print(f"skipped {bad} of {self.total} rows of {self.metadata} (--on-bad-sample skip){where}:\n"
              + listing(problems), flush=True)

    def _clear_report(self) -> None:
        """A clean split leaves no stale report from an earlier run of the same folder."""
        if self.policy.announce and self.policy.report_dir is not None:
            (self.policy.report_dir / REPORT_FILE).unlink(missing_ok=True)
