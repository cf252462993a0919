"""`gan eval`: measure a generator against a reference split, and record how.

Metrics here:
- `attr`: attribute accuracy. An attribute classifier trained on the real train split (and
  checked on the real test split) reads color/shape/size/position from each generated image;
  the score is the share that matches the caption's attributes, per attribute, their mean, and
  all four at once, split by caption wording (seen in training vs held-out).
- `diversity`: within-prompt variation of generated images relative to real ones
  (gan.metrics.diversity), the mode-collapse check.
Every result carries its provenance (checkpoint, step, samples, seed, classifier accuracy,
library versions) so a number can be traced to how it was computed.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from gan.data.metadata import read_metadata
from gan.errors import GanError
from gan.sampling import CONDITION_FILE, Sampler, resolve_export

METRICS = ("attr", "diversity")


def _rows_with_attributes(rows: list[dict], split: Path, metric: str) -> list[dict]:
    bad = [i + 1 for i, r in enumerate(rows) if not isinstance(r.get("attributes"), dict)]
    if bad:
        raise GanError(f"{split}/metadata.jsonl: metric '{metric}' needs an 'attributes' object on every "
                       f"row (as in the built-in shapes data); missing on line(s) {bad[:10]}")
    return rows


def attribute_metric(sampler: Sampler, rows: list[dict], split: Path, num: int, seed: int, truncation) -> dict:
    from gan.metrics.attributes import attribute_accuracy, load_or_train_classifier

    rows = _rows_with_attributes(rows, split, "attr")[:num]
    classifier, real_acc = load_or_train_classifier(split.parent, resolution=sampler.resolution)
    images = sampler.generate_each([r["text"] for r in rows], seed=seed, truncation=truncation)
    result = {"all_wordings": attribute_accuracy(classifier, images, [r["attributes"] for r in rows])}
    for wording in sorted({r.get("wording") for r in rows} - {None}):
        keep = [i for i, r in enumerate(rows) if r.get("wording") == wording]
        result[wording] = attribute_accuracy(classifier, images[keep], [rows[i]["attributes"] for i in keep])
        result[wording]["count"] = len(keep)
    result["classifier_real_test_accuracy"] = real_acc
    return result


def diversity_metric(sampler: Sampler, rows: list[dict], split: Path, seed: int, truncation, prompts: int = 8,
                     per_prompt: int = 32) -> dict:
    """Ratios for the captions of the split's first `prompts` distinct attribute combinations.

    The real references are drawn fresh by the shapes generator (`per_prompt` per combination,
    at the generator's resolution), so the estimate does not depend on how many images of one
    combination the split happens to hold.
    """
    import numpy as np

    from gan.data.shapes import render
    from gan.metrics.diversity import diversity_ratios

    chosen: dict[tuple, dict] = {}
    for r in _rows_with_attributes(rows, split, "diversity"):
        chosen.setdefault(tuple(sorted(r["attributes"].items())), r)
        if len(chosen) == prompts:
            break
    rng = np.random.default_rng(seed)
    per = {}
    for row in chosen.values():
        real = torch.stack([
            torch.from_numpy(np.array(render(row["attributes"], sampler.resolution, rng)[0])).permute(2, 0, 1)
            for _ in range(per_prompt)]).float() / 127.5 - 1  # (N, 3, R, R)
        fake = sampler.generate([row["text"]], per_prompt, seed=seed, truncation=truncation)[0]
        per[row["text"]] = diversity_ratios(fake, real)
    names = ("background", "center_x", "center_y", "side")
    mean = {k: sum(v[k] for v in per.values()) / len(per) for k in names}
    return {"std_ratio_mean": mean, "per_prompt": per, "generated_per_prompt": per_prompt,
            "real_reference": "drawn by gan.data.shapes.render"}


def _versions() -> dict:
    import accelerate
    import diffusers
    import torchvision

    import gan
    return {"gan": gan.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "accelerate": accelerate.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version()}


def evaluate(checkpoint: str, data: str, metrics: list[str], num: int = 2000, seed: int = 0,
             truncation: float | None = None, out: str | None = None, device: str = "cpu"):
    """Run the metrics; write the JSON result (and a line in the run's metrics.jsonl)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise GanError(f"--metrics: unknown {unknown or 'empty list'}; available: {', '.join(METRICS)}")
    split = Path(data)
    if not (split / "metadata.jsonl").is_file():
        raise GanError(f"--data {data}: expected a split folder with metadata.jsonl (e.g. datasets/shapes/test)")
    export = resolve_export(checkpoint)
    sampler = Sampler.from_pretrained(export, device=device)
    step = json.loads((export / CONDITION_FILE).read_text()).get("step")
    rows = read_metadata(split)
    values = {}
    started = time.time()
    if "attr" in metrics:
        values["attr"] = attribute_metric(sampler, rows, split, num, seed, truncation)
    if "diversity" in metrics:
        values["diversity"] = diversity_metric(sampler, rows, split, seed, truncation)
    result = {
        "metrics": values,
        "provenance": {
            "checkpoint": str(export), "step": step, "reference_split": str(split),
            "num_generated": min(num, len(rows)) if "attr" in metrics else None,
            "seed": seed, "truncation": truncation, "device": device,
            "seconds": round(time.time() - started, 1), "versions": _versions(),
        },
    }
    run_dir = export.parent if export.name == "generator" else None
    path = Path(out) if out else (run_dir or Path.cwd()) / f"eval-{'-'.join(metrics)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    if run_dir is not None:
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
    return result, path


def print_table(result: dict) -> None:
    m = result["metrics"]
    if "attr" in m:
        print(f"{'attribute accuracy':<22}" + "".join(f"{k:>10}" for k in ("color", "shape", "size", "position", "mean", "all")))
        for name, acc in m["attr"].items():
            if name == "classifier_real_test_accuracy":
                name = "real test (classifier)"
            print(f"{name:<22}" + "".join(f"{acc.get(k, float('nan')):>10.3f}"
                                          for k in ("color", "shape", "size", "position", "mean", "all")))
    if "diversity" in m:
        d = m["diversity"]["std_ratio_mean"]
        print("diversity (std generated / std real, 1 = like the data, 0 = collapsed): "
              + ", ".join(f"{k} {v:.2f}" for k, v in d.items()))
