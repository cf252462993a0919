"""Metrics of a joint (image + sound) generator on the built-in shapes data.

- fid: Fréchet distance of the generated images to the split's real images, on the image
  attribute classifier's features (gan.metrics.attributes; not comparable with Inception FID);
- fad: Fréchet audio distance of the generated sounds (Griffin-Lim waveforms, as a listener gets
  them) to the split's real sounds, on the audio attribute classifier's features
  (gan.joint.audio_classifier; not comparable with VGGish FAD);
- consistency: the attributes read from each generated image (image classifier) against those
  read from its own sound (audio classifier): agreement per attribute, their mean, and "all"
  (every attribute agrees). Measured on captioned pairs and, for a captioned model, also on pairs
  made without a caption (its zero condition), where nothing but the model ties the two together,
  and on pairs made for training captions drawn from the export's captions.json ("drawn_captions":
  what `gan sample` writes when no prompt is given);
- attr (captioned models): each modality's attributes against the caption's.

Pair i uses noise i of one seeded draw and, for captioned models, the caption of split row i
(rows cycled), so a number is reproduced by its seed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gan.errors import GanError
from gan.joint.mel import INVERSE, NNLS_ITER
from gan.metrics.attributes import NAMES, attribute_indices, load_or_train_classifier, predict_attributes

JOINT_METRICS = ("fid", "fad", "consistency", "attr")


def _agreement(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    same = torch.stack([a[n] == b[n] for n in NAMES], dim=1)  # (N, 4)
    out = {n: same[:, j].float().mean().item() for j, n in enumerate(NAMES)}
    out["mean"] = sum(out[n] for n in NAMES) / len(NAMES)
    out["all"] = same.all(1).float().mean().item()
    return out


@torch.no_grad()
def _image_features(model, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model.features(images[i:i + batch_size].float()) for i in range(0, len(images), batch_size)])


def _generate(sampler, prompts: list[str] | None, num: int, seed: int, truncation, batch_size: int, progress: bool,
              desc: str):
    """num pairs: pair i from noise i and prompt i (or the zero condition when prompts is None)."""
    g = torch.Generator().manual_seed(seed)
    z = sampler.generator.sample_noise(num, sampler.generator.config.z_dim, g, truncation)
    return sampler.run_paired(z, prompts, batch_size, progress, desc)


def evaluate_joint(checkpoint: str, data: str | Path, metrics: list[str], *, num: int, seed: int = 0,
                   truncation: float | None = None, batch_size: int = 64, griffin_lim_iters: int = 32,
                   device="cpu", progress: bool = True) -> dict:
    """The metrics as {name: value or dict}, plus "details" (counts, classifier accuracies, settings)."""
    from gan.data.audio_bank import audio_bank, to_float
    from gan.data.metadata import read_metadata
    from gan.joint.audio_classifier import audio_features, load_or_train_audio_classifier, predict_audio_attributes
    from gan.joint.sampling import JointSampler
    from gan.metrics.attributes import load_split
    from gan.metrics.stats import fid_from_features

    bad = [m for m in metrics if m not in JOINT_METRICS]
    if bad:
        raise GanError(f"metrics {bad} do not apply to a joint generator; use {', '.join(JOINT_METRICS)}")
    split = Path(data)
    if not (split / "metadata.jsonl").is_file():
        raise GanError(f"--data {data}: expected a split folder with metadata.jsonl, e.g. datasets/shapes/test")
    rows = read_metadata(split)
    if not rows:
        raise GanError(f"{split}/metadata.jsonl: no rows")
    sampler = JointSampler.from_pretrained(checkpoint, device)
    if "attr" in metrics and not sampler.conditioned:
        raise GanError("attr compares each output with its caption; this joint generator was trained without captions")
    picked = [rows[i % len(rows)] for i in range(num)]
    root = split.parent
    image_clf, image_acc = load_or_train_classifier(root, sampler.generator.config.image_resolution, progress=progress)
    audio_clf, audio_acc = load_or_train_audio_classifier(root, sampler.mel, progress=progress)

    runs = {"captioned": [r["text"] for r in picked]} if sampler.conditioned else {}
    if not sampler.conditioned or "consistency" in metrics:
        runs["uncaptioned"] = None
    if sampler.conditioned and sampler.captions and "consistency" in metrics:
        runs["drawn_captions"] = sampler.draw_captions(num, seed)  # what `gan sample` makes without a prompt
    out, details = {}, {"num_generated": num, "griffin_lim_iters": griffin_lim_iters, "seed": seed,
                        "inverse_mel": {"solver": INVERSE, "iterations": NNLS_ITER},
                        "image_classifier_test_accuracy": image_acc, "audio_classifier_test_accuracy": audio_acc,
                        "mel": sampler.mel.to_dict(), "conditioned": sampler.conditioned}
    generated = {}
    for name, prompts in runs.items():
        images, mels = _generate(sampler, prompts, num, seed, truncation, batch_size, progress, f"generating ({name})")
        waves = sampler.waveforms(mels, griffin_lim_iters, progress, f"sounds ({name})")  # (N, T): what a listener hears
        generated[name] = (images, waves)
    main = "captioned" if sampler.conditioned else "uncaptioned"
    images, waves = generated[main]
    if "fid" in metrics or "fad" in metrics:
        real_images, _ = load_split(split, sampler.generator.config.image_resolution, progress)
        details["num_real"] = len(real_images)
    if "fid" in metrics:
        real_f = _image_features(image_clf, real_images.float() / 127.5 - 1)
        out["fid"] = fid_from_features(real_f, _image_features(image_clf, images), allow_rank_deficient=False)
    if "fad" in metrics:
        real_waves = to_float(audio_bank(split, rows, sampler.mel.sample_rate, sampler.mel.seconds, progress=progress))
        out["fad"] = fid_from_features(audio_features(audio_clf, real_waves, sampler.mel),
                                       audio_features(audio_clf, waves, sampler.mel))
    if "consistency" in metrics or "attr" in metrics:
        preds = {name: (predict_attributes(image_clf, im), predict_audio_attributes(audio_clf, w, sampler.mel))
                 for name, (im, w) in generated.items()}
    # Rows tagged with a caption wording (the built-in data: "seen" / "heldout" templates and synonyms)
    # are also scored per wording: held-out words are where the text encoder, not the pair, is the limit.
    wordings = {w: torch.tensor([r.get("wording") == w for r in picked])
                for w in sorted({r.get("wording") for r in picked} - {None})} if sampler.conditioned else {}
    if "consistency" in metrics:
        out["consistency"] = {name: _agreement(*p) for name, p in preds.items()}
        for w, keep in wordings.items():
            out["consistency"][f"captioned_{w}"] = _agreement(*(_rows(p, keep) for p in preds["captioned"]))
    if "attr" in metrics:
        labels = attribute_indices([r.get("attributes") for r in picked], f"{split}/metadata.jsonl")
        wanted = {n: labels[:, j] for j, n in enumerate(NAMES)}
        img, aud = preds["captioned"]
        out["attr"] = {"image": _agreement(img, wanted), "audio": _agreement(aud, wanted)}
        for w, keep in wordings.items():
            out["attr"][f"image_{w}"] = _agreement(_rows(img, keep), _rows(wanted, keep))
            out["attr"][f"audio_{w}"] = _agreement(_rows(aud, keep), _rows(wanted, keep))
    return {"metrics": out, "details": details}


def _rows(predictions: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
    return {n: v[keep] for n, v in predictions.items()}
