"""The `gan` command: data, train, sample, eval.

User mistakes (`GanError`) print one clear line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gan.errors import GanError

# gan.conditioning.ZERO_SHOT_ROUTES, spelled out so that parsing arguments does not import torch
ZERO_SHOT_ROUTES = ("direct", "projected", "caption")
ZERO_SHOT_HELP = ("with --audio/--image-encoder: the aligned vector itself, that vector kept to the training "
                  "captions' subspace, or its nearest training caption")


def _add_train(sub):
    p = sub.add_parser("train", help="train a GAN (the same as `accelerate launch train_gan.py`)")
    p.add_argument("--config", required=True, help="TOML experiment config, e.g. configs/t2i_shapes.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=500 (repeatable)")
    p.add_argument("--resume", default=None,
                   help="'latest' (newest checkpoint of the run, error if none), 'auto' (latest if any) "
                        "or a checkpoint-<step> folder")
    p.add_argument("--max-steps", type=int, default=None, help="shorthand for --set train.max_steps=N")
    p.add_argument("--max-minutes", type=float, default=None, help="shorthand for --set train.max_minutes=M")
    p.add_argument("--on-bad-sample", choices=["error", "skip"], default=None,
                   help="bad training rows (corrupt image or WAV, bad metadata line): 'error' stops and lists "
                        "them (the default), 'skip' drops them and lists them in RUN/bad_samples.txt; "
                        "shorthand for --set data.on_bad_sample=...")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> None:
    from gan.config import load_config
    from gan.training.trainer import train

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    if args.on_bad_sample is not None:
        overrides.append(f"data.on_bad_sample={args.on_bad_sample}")
    cfg = load_config(args.config, overrides)
    run_dir = train(cfg, resume=args.resume)
    from accelerate import PartialState

    if PartialState().is_main_process:  # one line per run, not one per process
        use = {"video-repair": f"gan repair --checkpoint {run_dir} --input CLIP --out DIR",
               "joint": f"gan sample --checkpoint {run_dir} --num 8"}.get(
            cfg.task, f'gan sample --checkpoint {run_dir} --prompt "..."')
        print(f"run folder: {run_dir}  (use it with: {use})")


def _add_data(sub):
    p = sub.add_parser("data", help="build the built-in data or check a dataset folder")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    s = dsub.add_parser("shapes", help="write the built-in multimodal 'shapes' dataset")
    s.add_argument("--out", default="datasets/shapes")
    s.add_argument("--train", type=int, default=20000, help="number of training samples")
    s.add_argument("--test", type=int, default=2000, help="number of test samples")
    s.add_argument("--size", type=int, default=32, help="image side in pixels (32 or 64)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--if-missing", action="store_true", help="do nothing when --out already holds a dataset")
    s.set_defaults(func=cmd_data_shapes)
    m = dsub.add_parser("moving-shapes", help="write the built-in video data (clips of moving shapes)")
    m.add_argument("--out", default="datasets/moving_shapes")
    m.add_argument("--train", type=int, default=4000, help="number of training clips")
    m.add_argument("--test", type=int, default=400, help="number of test clips")
    m.add_argument("--frames", type=int, default=8, help="frames per clip")
    m.add_argument("--size", type=int, default=32, help="frame side in pixels")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--if-missing", action="store_true", help="do nothing when --out already holds a dataset")
    m.set_defaults(func=cmd_data_moving_shapes)
    c = dsub.add_parser("check", help="validate a dataset folder (metadata.jsonl + files)")
    c.add_argument("path", help="a dataset root with split folders, or one split folder")
    c.add_argument("--resolution", type=int, default=None, help="also require this image size")
    c.set_defaults(func=cmd_data_check)


def _write_dataset(args, write) -> None:
    """Run write(out) unless --if-missing finds a dataset already there."""
    out = Path(args.out)
    if args.if_missing and (out / "train" / "metadata.jsonl").is_file():
        print(f"{out} already exists; skipping (delete it to rebuild)")
        return
    write(out)
    print(f"wrote {out}")


def cmd_data_shapes(args) -> None:
    from gan.data.shapes import write_shapes

    _write_dataset(args, lambda out: write_shapes(out, args.train, args.test, size=args.size, seed=args.seed))


def cmd_data_moving_shapes(args) -> None:
    from gan.data.moving_shapes import write_moving_shapes

    _write_dataset(args, lambda out: write_moving_shapes(out, args.train, args.test, frames=args.frames,
                                                         size=args.size, seed=args.seed))


def cmd_data_check(args) -> None:
    from gan.data.metadata import check_dataset

    problems = check_dataset(args.path, resolution=args.resolution)
    for line in problems:
        print(line)
    if problems:
        raise GanError(f"{args.path}: {len(problems)} problem(s) found (listed above)")
    print(f"{args.path}: OK")


def _add_sample(sub):
    p = sub.add_parser("sample", help="generate images from a run folder or exported generator",
                       description="Conditions: --prompt/--prompt-file, --audio and --image (each repeatable; "
                                   "lists are paired one to one, a single item is repeated). A generator "
                                   "trained on text only takes --audio/--image through an encoder aligned "
                                   "by `gan align` (--audio-encoder / --image-encoder).")
    p.add_argument("--checkpoint", required=True, help="run folder (uses its generator/) or generator folder")
    p.add_argument("--prompt", action="append", default=[], help="text prompt (repeatable)")
    p.add_argument("--prompt-file", default=None, help="a text file with one prompt per line")
    p.add_argument("--audio", action="append", default=[], help="a WAV/FLAC file to condition on (repeatable)")
    p.add_argument("--image", action="append", default=[], help="a PNG/JPEG whose content to vary (repeatable)")
    p.add_argument("--weights", default=None,
                   help="fusion weights for a 'weighted' generator, e.g. text=0.7,audio=0.3")
    p.add_argument("--audio-encoder", default=None, help="aligned audio encoder folder (zero-shot, gan align)")
    p.add_argument("--image-encoder", default=None, help="aligned image encoder folder (zero-shot, gan align)")
    p.add_argument("--zero-shot-route", default="direct", choices=ZERO_SHOT_ROUTES, help=ZERO_SHOT_HELP)
    p.add_argument("--num", type=int, default=8, help="images per condition")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=None,
                   help="resample noise values beyond ±T (truncation trick); default: none")
    p.add_argument("--out", default="samples/out", help="output folder")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--griffin-lim-iters", type=int, default=32,
                   help="joint generators: Griffin-Lim iterations turning spectrograms into sound")
    p.add_argument("--unprompted", default="captions", choices=("captions", "none"),
                   help="joint generators trained with captions, when no --prompt is given: 'captions' draws a "
                        "training caption per pair (saved with the export; how class-conditional GANs are sampled "
                        "without a class), 'none' uses the no-caption condition learned by caption dropout")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    p.set_defaults(func=cmd_sample)


def parse_weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise GanError(f"--weights {text!r}: expected NAME=NUMBER pairs like text=0.7,audio=0.3") from None
    return out


def read_prompt_file(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise GanError(f"--prompt-file {path}: no such file")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise GanError(f"--prompt-file {path}: not a UTF-8 text file") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise GanError(f"--prompt-file {path}: no prompts (one per line; '#' starts a comment)")
    return prompts


def _device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def cmd_sample(args) -> None:
    from gan.sampling import Sampler, check_prompts, export_task, save_samples

    prompts = list(args.prompt) + (read_prompt_file(args.prompt_file) if args.prompt_file else [])
    if prompts:
        check_prompts(prompts)
    if export_task(args.checkpoint) == "joint":
        return _sample_joint(args, prompts)
    if not (prompts or args.audio or args.image):
        raise GanError("no condition given: pass --prompt TEXT (repeatable), --prompt-file FILE, --audio FILE "
                       "or --image FILE")
    sampler = Sampler.from_pretrained(args.checkpoint, device=_device(args.device))
    for modality, folder in (("audio", args.audio_encoder), ("image", args.image_encoder)):
        if folder:
            sampler.conditioner.add_aligned(modality, folder, args.zero_shot_route)
    if args.audio:
        conditioner = sampler.conditioner
        enc = conditioner.encoder("audio") if "audio" in conditioner.modalities else \
            conditioner.aligned.get("audio", (None,))[0]
        _report_audio(args.audio, getattr(getattr(enc, "config", None), "sample_rate", 16000))
    cond = sampler.condition(texts=prompts or None, audio=args.audio or None, images=args.image or None,
                             weights=parse_weights(args.weights))
    images = sampler.generate_from(cond, args.num, seed=args.seed, truncation=args.truncation,
                                   batch_size=args.batch_size)
    labels = _labels(prompts, args.audio, args.image, len(images))
    written = save_samples(images, labels, Path(args.out))
    print(f"wrote {len(written)} files to {args.out}")


def _sample_joint(args, prompts: list[str]) -> None:
    """Image + sound pairs: NNNN.png, NNNN.wav and index.html (look and listen) in --out."""
    from gan.joint.sampling import JointSampler, write_pairs

    if args.audio or args.image:
        raise GanError("a joint generator makes its own sound and picture; condition it with --prompt only")
    sampler = JointSampler.from_pretrained(args.checkpoint, device=_device(args.device))
    if not prompts and sampler.conditioned and args.unprompted == "captions" and not sampler.captions:
        print("note: this export has no captions.json (older than the caption bank); sampling its no-caption condition")
    images, mels, labels = sampler.generate(prompts or None, args.num, seed=args.seed, truncation=args.truncation,
                                            batch_size=args.batch_size, unprompted=args.unprompted)
    waves = sampler.waveforms(mels, args.griffin_lim_iters, progress=True)
    write_pairs(images, mels, waves, sampler.mel.sample_rate, labels, Path(args.out))
    print(f"wrote {len(images)} image + sound pairs and index.html to {args.out}")


def _report_audio(files: list[str], rate: int = 16000) -> None:
    """Say what was converted (channels, rate) before the audio encoder hears it."""
    from gan.encoders.audio import load_audio

    for f in files:
        _, r = load_audio(f, rate)
        done = [f"{r['channels']} channels -> mono"] if r["downmixed"] else []
        done += [f"{r['rate']} Hz -> {r['resampled_to']} Hz"] if r["resampled_to"] else []
        if done:
            print(f"{f}: converted " + ", ".join(done))


def _labels(prompts, audio, images, n) -> list[str]:
    """One label per condition: its prompt and the names of its files."""
    def pick(items, i):
        return items[i] if len(items) > 1 else (items[0] if items else None)
    out = []
    for i in range(n):
        parts = [pick(prompts, i), *(Path(x).name for x in (pick(audio, i), pick(images, i)) if x)]
        out.append(" + ".join(p for p in parts if p))
    return out


def _add_eval(sub):
    p = sub.add_parser("eval", help="FID, KID, IS, precision/recall, attribute accuracy, diversity",
                       description="Measure a generator (--checkpoint, images made for the captions of --data) "
                                   "or a folder of images (--fake) against a reference (--real FOLDER or --data "
                                   "SPLIT). Flags override the --protocol file. Several processes: "
                                   "accelerate launch -m gan eval ...")
    src = p.add_argument_group("what to measure")
    src.add_argument("--checkpoint", default=None, help="run folder or exported generator folder")
    src.add_argument("--fake", default=None, help="a folder of generated images (instead of --checkpoint)")
    src.add_argument("--real", default=None, help="a folder of reference images (default: the --data split)")
    src.add_argument("--data", default=None, help="reference split with metadata.jsonl, e.g. datasets/shapes/test")
    src.add_argument("--protocol", default=None, help="protocol TOML (evaluate/*.toml); flags override it")
    how = p.add_argument_group("how (defaults: the protocol file, else gan.metrics.protocol.EvalProtocol)")
    how.add_argument("--metrics", default=None, help="comma-separated: fid, kid, is, pr, attr, diversity")
    how.add_argument("--num", type=int, default=None, help="generated images (default 10000)")
    how.add_argument("--num-real", type=int, default=None, help="reference images; 0 = the whole split")
    how.add_argument("--backbone", default=None,
                     help="inception | dataset | torchvision:<model> (default auto: dataset for the built-in data)")
    how.add_argument("--resize", default=None, choices=["tf-bilinear", "antialias"],
                     help="Inception input resize: tf-bilinear (reference-compatible, default) or antialias "
                          "(torchmetrics >= 1.8's default; not comparable with published FIDs)")
    how.add_argument("--inception-weights", default=None,
                     help="local file weights-inception-2015-12-05-6726825d.pth (or .safetensors)")
    how.add_argument("--backbone-weights", default=None, help="weights file for a torchvision backbone")
    how.add_argument("--seed", type=int, default=None)
    how.add_argument("--truncation", type=float, default=None)
    how.add_argument("--batch-size", type=int, default=None)
    how.add_argument("--kid-subset-size", type=int, default=None)
    how.add_argument("--kid-subsets", type=int, default=None)
    how.add_argument("--condition", default=None,
                     help="row fields that drive the generator: text, audio, image (default: what it was trained on)")
    how.add_argument("--audio-encoder", default=None, help="zero-shot: audio encoder aligned by gan align")
    how.add_argument("--image-encoder", default=None, help="zero-shot: image encoder aligned by gan align")
    how.add_argument("--zero-shot-route", default=None, choices=ZERO_SHOT_ROUTES, help=ZERO_SHOT_HELP)
    how.add_argument("--allow-rank-deficient", action="store_true", default=None,
                     help="compute FID even with no more samples than feature dimensions (biased)")
    p.add_argument("--out", default=None, help="JSON result file (default: <run>/eval-<metrics>.json or ./)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> None:
    from gan.evaluation import evaluate, print_table
    from gan.metrics.protocol import load_protocol

    given = {"data": args.data, "num": args.num, "num_real": args.num_real, "backbone": args.backbone,
             "resize": args.resize, "inception_weights": args.inception_weights,
             "backbone_weights": args.backbone_weights, "seed": args.seed, "truncation": args.truncation,
             "batch_size": args.batch_size, "kid_subset_size": args.kid_subset_size, "kid_subsets": args.kid_subsets,
             "allow_rank_deficient": args.allow_rank_deficient, "audio_encoder": args.audio_encoder,
             "image_encoder": args.image_encoder, "zero_shot_route": args.zero_shot_route,
             "condition": None if args.condition is None else [m.strip() for m in args.condition.split(",") if m.strip()],
             "metrics": None if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]}
    protocol = load_protocol(args.protocol, given)
    result, path = evaluate(protocol, checkpoint=args.checkpoint, fake=args.fake, real=args.real, out=args.out,
                            device=_device(args.device))
    if path is not None:  # the main process
        print_table(result)
        print(f"wrote {path}")


def _add_align(sub):
    p = sub.add_parser("align", help="train an audio or image encoder into the text encoder's space (InfoNCE)",
                       description="Afterwards a text-trained generator can be driven by audio or images: "
                                   "gan sample --checkpoint RUN --audio clip.wav --audio-encoder OUT/encoder")
    p.add_argument("--data", required=True, help="paired split, e.g. datasets/shapes/train")
    p.add_argument("--modality", required=True, choices=["audio", "image"])
    p.add_argument("--test", default=None, help="split for the retrieval accuracy (default: sibling test/)")
    p.add_argument("--out", default=None, help="output folder (default runs/align_<modality>)")
    p.add_argument("--text-encoder", default="minilm")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--width", type=int, default=32, help="student encoder base width")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_align)


def cmd_align(args) -> None:
    from gan.alignment import align

    test = args.test
    if test is None and (Path(args.data).parent / "test" / "metadata.jsonl").is_file():
        test = str(Path(args.data).parent / "test")
    out = args.out or f"runs/align_{args.modality}"
    for name in ("steps", "batch_size"):
        if getattr(args, name) < 1:
            raise GanError(f"--{name.replace('_', '-')}: expected a positive integer")
    result = align(args.data, args.modality, out, test=test, text_encoder=args.text_encoder, steps=args.steps,
                   batch_size=args.batch_size, lr=args.lr, temperature=args.temperature, width=args.width,
                   seed=args.seed)
    if "test_retrieval" in result:
        r = result["test_retrieval"]
        print(f"{args.modality} -> caption retrieval on {test}: top-1 same attributes "
              f"{r.get('top1_same_attributes', float('nan')):.3f} (chance {r.get('chance_same_attributes', 0):.3f}), "
              f"exact row {r['top1_exact_row']:.3f}")
    print(f"wrote {out}/encoder and {out}/align.json")


def _add_repair(sub):
    p = sub.add_parser("repair", help="fill damaged regions of a clip with a video-repair model")
    p.add_argument("--checkpoint", required=True, help="run folder or exported generator of a video-repair run")
    p.add_argument("--input", required=True, help="a frame folder (PNG/JPEG sorted by name) or an animated GIF/WebP")
    p.add_argument("--mask", default=None, help="folder of mask PNGs named like the frames, nonzero = hole")
    p.add_argument("--damage", default=None,
                   help="generate the holes instead: strokes, moving_strokes, boxes, dropped_frames, scratches, mixed")
    p.add_argument("--seed", type=int, default=0, help="seed of --damage")
    p.add_argument("--prompt", default=None, help="the clip's caption, for a model trained with repair.conditioned")
    p.add_argument("--audio", default=None, help="the clip's sound, for a model trained with repair.conditioned")
    p.add_argument("--out", required=True, help="output folder: repaired frames (same names) and preview.gif")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_repair)


def cmd_repair(args) -> None:
    from gan.repair.run import repair

    info = repair(args.checkpoint, args.input, args.out, mask=args.mask, damage=args.damage, seed=args.seed,
                  device=_device(args.device), prompt=args.prompt, audio=args.audio)
    print(f"repaired {info['frames']} frames of {info['size'][1]}x{info['size'][0]} ({info['hole_share']:.1%} holes, "
          f"window {info['window']}) -> {args.out}; preview {info['preview']} ({info['panels']})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan", description="GAN Workbench: multimodal conditional GANs")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_data, _add_train, _add_sample, _add_eval, _add_align, _add_repair):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except GanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
