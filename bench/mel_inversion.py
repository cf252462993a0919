"""How much of a sound survives mel -> waveform -> mel, per inverse-mel solver (gan/joint/mel.py)?

A joint generator draws log-mel spectrograms; the listener (and `gan eval`) gets the waveform that
the inverse mel filterbank + Griffin-Lim make of them. This compares the solvers on
- the dataset's real test sounds: round-trip error (normalised log-mel units; 2 units = 90 dB) and
  the audio attribute classifier's accuracy on the round-tripped sounds;
- with --checkpoint, a joint generator's sounds for the first --num test captions worded like
  training ("seen"; all rows when the data has no wording tags): the classifier on the spectrograms
  as drawn (no inversion: what G meant), then on each solver's waveform, against the caption.

    .venv/bin/python bench/mel_inversion.py --data datasets/shapes --checkpoint runs/joint_shapes --num 400
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from gan.data.audio_bank import audio_bank, to_float
from gan.data.metadata import read_metadata
from gan.errors import GanError
from gan.joint.audio_classifier import audio_attribute_accuracy, load_or_train_audio_classifier
from gan.joint.mel import INVERSES, MelSettings, mel_to_waveform, waveform_to_mel
from gan.metrics.attributes import NAMES, attribute_accuracy

HEADER = ["sounds", "solver", "round trip L1", *NAMES, "mean", "seconds"]


def row(what: str, solver: str, error: float | None, acc: dict, seconds: float | None) -> str:
    cells = [what, solver, "—" if error is None else f"{error:.4f}", *(f"{acc[k]:.3f}" for k in (*NAMES, "mean")),
             "—" if seconds is None else f"{seconds:.1f}"]
    return "| " + " | ".join(cells) + " |"


def solver_rows(what: str, mels: torch.Tensor, attributes: list[dict], clf, s: MelSettings, solvers, gl_iters: int):
    for solver in solvers:
        t0 = time.process_time()
        waves = mel_to_waveform(mels, s, n_iter=gl_iters, inverse=solver)
        seconds = time.process_time() - t0
        error = (waveform_to_mel(waves, s) - mels).abs().mean().item()
        print(row(what, solver, error, audio_attribute_accuracy(clf, waves, attributes, s), seconds), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset root with train/ and test/ and their WAVs (gan data shapes)")
    ap.add_argument("--checkpoint", help="a joint run folder or export; without it only real sounds are compared")
    ap.add_argument("--num", type=int, default=400, help="test rows (and generated pairs) compared")
    ap.add_argument("--solvers", default=",".join(INVERSES), help=f"comma-separated, from {list(INVERSES)}")
    ap.add_argument("--griffin-lim-iters", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    solvers = [x.strip() for x in args.solvers.split(",") if x.strip()]
    unknown = [x for x in solvers if x not in INVERSES]
    if unknown or not solvers:
        raise GanError(f"--solvers: unknown {unknown}; expected a comma-separated list from {list(INVERSES)}")
    if args.num < 1:
        raise GanError(f"--num must be >= 1, got {args.num}")
    root, sampler = Path(args.data), None
    if args.checkpoint:
        from gan.joint.sampling import JointSampler

        sampler = JointSampler.from_pretrained(args.checkpoint)
    s = sampler.mel if sampler is not None else MelSettings()
    test = read_metadata(root / "test")
    picked = [i for i, r in enumerate(test) if r.get("wording", "seen") == "seen"][: args.num]
    if not picked:
        raise GanError(f"{root / 'test'}: no rows worded like training (metadata 'wording' = 'seen')")
    rows = [test[i] for i in picked]
    unlabelled = [i for i, r in zip(picked, rows) if not isinstance(r.get("attributes"), dict)]
    if unlabelled:
        raise GanError(f"{root / 'test'} metadata: row {unlabelled[0]} has no 'attributes' table; the sounds are "
                       "scored against the built-in data's attribute labels (gan data shapes)")
    attributes = [r["attributes"] for r in rows]
    clf, _ = load_or_train_audio_classifier(root, s, progress=False)
    print(f"{len(rows)} test rows; Griffin-Lim {args.griffin_lim_iters} iterations; CPU seconds per solver pass\n")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + " --- |" * len(HEADER))
    real = waveform_to_mel(to_float(audio_bank(root / "test", test, s.sample_rate, s.seconds, progress=False)[picked]), s)
    print(row("real", "none (the WAV)", None, attribute_accuracy(clf, real, attributes), None))
    solver_rows("real", real, attributes, clf, s, solvers, args.griffin_lim_iters)
    if sampler is not None:
        if not sampler.conditioned:
            raise GanError(f"{args.checkpoint}: an unconditional joint generator; this compares sounds against captions")
        z = sampler.generator.sample_noise(len(rows), sampler.generator.config.z_dim, torch.Generator().manual_seed(0))
        _, mels = sampler.run_paired(z, [r["text"] for r in rows])
        print(row("generated", "none (the spectrogram)", None, attribute_accuracy(clf, mels, attributes), None))
        solver_rows("generated", mels, attributes, clf, s, solvers, args.griffin_lim_iters)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GanError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
