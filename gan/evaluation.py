"""`gan eval`: measure a generator (or a folder of images) against a reference, and record how.

Feature metrics (one backbone pass serves all): `fid`, `kid`, `is`, `pr` (precision, recall,
density, coverage) — see gan.metrics.features. Metrics of the built-in data: `attr` (attribute
accuracy, per caption wording) and `diversity` (within-prompt variation vs real images).

Generated sample i uses caption i mod (rows of the reference split) and row i of one seeded
noise matrix, so a sample is the same whichever process draws it. Every number is stored with
its provenance: metric, backbone and weights hash, resize, sample counts, reference, seed,
truncation and library versions.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gan.data.metadata import read_metadata
from gan.errors import GanError
from gan.metrics.features import FeatureMetrics, gather_rows, world
from gan.metrics.protocol import FEATURE_METRICS, REPAIR_METRICS, EvalProtocol, to_dict
from gan.sampling import CONDITION_FILE, Sampler, export_task, resolve_export, to_uint8


def _rows_with_attributes(rows: list[dict], split: Path, metric: str) -> list[dict]:
    bad = [i + 1 for i, r in enumerate(rows) if not isinstance(r.get("attributes"), dict)]
    if bad:
        raise GanError(f"{split}/metadata.jsonl: metric '{metric}' needs an 'attributes' object on every "
                       f"row (as in the built-in shapes data); missing on line(s) {bad[:10]}")
    return rows


def attribute_metric(images: torch.Tensor, rows: list[dict], split: Path) -> dict:
    """Attribute accuracy of uint8 images (N, 3, R, R), image i made for caption rows[i % len(rows)]."""
    from gan.metrics.attributes import attribute_accuracy, load_or_train_classifier

    _rows_with_attributes(rows, split, "attr")
    per_image = [rows[i % len(rows)] for i in range(len(images))]
    classifier, real_acc = load_or_train_classifier(split.parent, resolution=images.shape[-1])
    x = images.float() / 127.5 - 1
    result = {"all_wordings": attribute_accuracy(classifier, x, [r["attributes"] for r in per_image])}
    for wording in sorted({r.get("wording") for r in per_image} - {None}):
        keep = [i for i, r in enumerate(per_image) if r.get("wording") == wording]
        result[wording] = attribute_accuracy(classifier, x[keep], [per_image[i]["attributes"] for i in keep])
        result[wording]["count"] = len(keep)
    result["classifier_real_test_accuracy"] = real_acc
    return result


def diversity_metric(sampler: Sampler, rows: list[dict], split: Path, seed: int, truncation, prompts: int = 8,
                     per_prompt: int = 32, modalities: list[str] | None = None) -> dict:
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
        cond = sampler.condition(**sampler.row_inputs([row], split, modalities))
        fake = sampler.generate_from(cond, per_prompt, seed=seed, truncation=truncation)[0]
        per[row["text"]] = diversity_ratios(fake, real)
    names = ("background", "center_x", "center_y", "side")
    mean = {k: sum(v[k] for v in per.values()) / len(per) for k in names}
    return {"std_ratio_mean": mean, "per_prompt": per, "generated_per_prompt": per_prompt,
            "real_reference": "drawn by gan.data.shapes.render"}


def versions() -> dict:
    import accelerate
    import diffusers
    import torchmetrics
    import torchvision

    import gan
    return {"gan": gan.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "torchmetrics": torchmetrics.__version__, "accelerate": accelerate.__version__,
            "diffusers": diffusers.__version__, "python": platform.python_version()}


def _count_label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _init_processes() -> torch.device | None:
    """Under `accelerate launch` with several processes, join the process group."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        return PartialState().device
    return None


def _main_process_first():
    import contextlib

    if world()[1] > 1:
        from accelerate import PartialState

        return PartialState().main_process_first()
    return contextlib.nullcontext()


def _resolve_backbone_name(p: EvalProtocol, rows: list[dict] | None) -> str:
    if p.backbone != "auto":
        return p.backbone
    labelled = rows is not None and rows and all(isinstance(r.get("attributes"), dict) for r in rows)
    return "dataset" if labelled else "inception"


def _generate_pass(sampler: Sampler, rows: list[dict], split: Path, p: EvalProtocol, fm: FeatureMetrics | None,
                   keep_images: bool, progress: bool):
    """Generate this process's shard of the N samples, feeding the feature metric as it goes."""
    from gan.models.generator import ConditionalGenerator

    rank, size = world()
    g = torch.Generator().manual_seed(p.seed)
    z = ConditionalGenerator.sample_noise(p.num, sampler.generator.config.z_dim, g, p.truncation or None)
    mine = list(range(rank, p.num, size))
    kept, kept_index, t_gen, t_feat = [], [], 0.0, 0.0
    for lo in tqdm(range(0, len(mine), p.batch_size), desc="generate", disable=not progress or rank != 0):
        idx = mine[lo:lo + p.batch_size]
        t0 = time.time()
        inputs = sampler.row_inputs([rows[i % len(rows)] for i in idx], split, p.condition or None)
        images = to_uint8(sampler.generate_with_noise(inputs, z[idx]))
        t1 = time.time()
        if fm is not None:
            fm.update(images, real=False, index=torch.tensor(idx))
        t_feat += time.time() - t1
        t_gen += t1 - t0
        if keep_images:
            kept.append(images)
            kept_index.append(torch.tensor(idx))
    images = None
    if keep_images:
        index = gather_rows(torch.cat(kept_index))
        images = gather_rows(torch.cat(kept))[index.argsort()]
    return images, {"generate_s": round(t_gen, 2), "generated_features_s": round(t_feat, 2)}


def _folder_pass(folder: Path, fm: FeatureMetrics, p: EvalProtocol, progress: bool) -> tuple[int, dict]:
    from gan.metrics.images import ImageFolder, list_images

    files = list_images(folder)[: p.num] if p.num else list_images(folder)
    dataset = ImageFolder(files)
    rank, size = world()
    mine = list(range(rank, len(files), size))
    started = time.time()
    for lo in tqdm(range(0, len(mine), p.batch_size), desc="fake features", disable=not progress or rank != 0):
        idx = mine[lo:lo + p.batch_size]
        fm.update(torch.stack([dataset[i] for i in idx]), real=False, index=torch.tensor(idx))
    return len(files), {"generated_features_s": round(time.time() - started, 2), "converted": dict(dataset.converted)}


def evaluate(p: EvalProtocol, *, checkpoint: str | None = None, fake: str | None = None, real: str | None = None,
             out: str | None = None, device: str = "cpu", progress: bool = True) -> tuple[dict, Path | None]:
    """Run the protocol's metrics; the main process writes the JSON result (and a metrics.jsonl line).

    Either `checkpoint` (images generated for the captions of `p.data`) or `fake` (a folder of
    images) is the generated side; the reference is `real` or else `p.data`.
    """
    if (checkpoint is None) == (fake is None):
        raise GanError("give exactly one generated source: --checkpoint RUN or --fake FOLDER")
    task = export_task(checkpoint) if checkpoint is not None else None
    if task == "video-repair":
        return _evaluate_repair(p, checkpoint, out, device, progress)
    if task == "joint":
        return _evaluate_joint(p, checkpoint, out, device, progress)
    device = _init_processes() or torch.device(device)
    rank, size = world()
    started = time.time()
    split = Path(p.data) if p.data else None
    reference = Path(real) if real else split
    feature_metrics = [m for m in p.metrics if m in FEATURE_METRICS]
    rows = None
    if checkpoint is not None:
        if split is None or not (split / "metadata.jsonl").is_file():
            raise GanError(f"--data {p.data or '(not given)'}: generating needs a split folder with metadata.jsonl "
                           f"whose captions are the prompts (e.g. datasets/shapes/test)")
        rows = read_metadata(split)
        if not rows:
            raise GanError(f"{split}/metadata.jsonl: no rows")
    elif any(m in ("attr", "diversity") for m in p.metrics):
        raise GanError("metrics 'attr' and 'diversity' need --checkpoint (a generator and the captions of --data)")
    if feature_metrics and reference is None:
        raise GanError("feature metrics need a reference: --real FOLDER or --data SPLIT")

    sampler = None
    if checkpoint is not None:
        sampler = Sampler.from_pretrained(checkpoint, device=device)
        for m, folder in (("audio", p.audio_encoder), ("image", p.image_encoder)):
            if folder:  # zero-shot: drive a text generator through an aligned encoder
                sampler.conditioner.add_aligned(m, folder, p.zero_shot_route)
    if reference is not None and reference == split and rows is not None:
        ref_rows = rows
    else:
        ref_rows = read_metadata(reference) if reference and (reference / "metadata.jsonl").is_file() else None
    backbone_name = _resolve_backbone_name(p, ref_rows)
    fm, backbone, ref_info = None, None, {}
    timing: dict = {}
    if feature_metrics:
        from gan.metrics.backbones import build_backbone
        from gan.metrics.reference import reference_features

        if backbone_name == "dataset" and ref_rows is None:
            raise GanError("backbone 'dataset' needs a reference split of the built-in data (with attributes); "
                           "use --backbone inception for plain folders")
        resolution = sampler.resolution if sampler is not None else None
        with _main_process_first():  # the dataset backbone may train and cache a classifier
            backbone = build_backbone(
                backbone_name, inception_weights=p.inception_weights or None, resize=p.resize,
                dataset_root=str(reference.resolve().parent) if backbone_name == "dataset" else None,
                resolution=resolution or 32, weights=p.backbone_weights or None, device=device)
        fm = FeatureMetrics(backbone, feature_metrics, kid_subset_size=p.kid_subset_size, kid_subsets=p.kid_subsets,
                            pr_k=p.pr_k, dc_k=p.dc_k, is_splits=p.is_splits,
                            allow_rank_deficient=p.allow_rank_deficient, seed=p.seed)
        if fm.needs_real:
            t0 = time.time()
            features, ref_info = reference_features(reference, fm, num_real=p.num_real, batch_size=p.batch_size,
                                                    progress=progress)
            fm.set_reference(features)
            timing["reference_s"] = round(time.time() - t0, 2)

    values: dict = {}
    generated_info: dict = {}
    if checkpoint is not None:
        images, t = _generate_pass(sampler, rows, split, p, fm, keep_images="attr" in p.metrics, progress=progress)
        timing.update(t)
        num_generated = p.num
        if "attr" in p.metrics and rank == 0:
            values["attr"] = attribute_metric(images, rows, split)
    else:
        num_generated, generated_info = _folder_pass(Path(fake), fm, p, progress)
        timing["generated_features_s"] = generated_info.pop("generated_features_s")
    if fm is not None:
        t0 = time.time()
        values.update({k: v for k, v in fm.compute().items() if k not in ("num_generated", "num_real")})
        timing["metrics_s"] = round(time.time() - t0, 2)
    if "diversity" in p.metrics and rank == 0:
        values["diversity"] = diversity_metric(sampler, rows, split, p.seed, p.truncation or None,
                                               modalities=p.condition or None)
    timing["total_s"] = round(time.time() - started, 2)
    if rank != 0:
        return {}, None

    export = resolve_export(checkpoint) if checkpoint else None
    step = json.loads((export / CONDITION_FILE).read_text()).get("step") if export else None
    common = {
        "generated": str(export) if export else str(Path(fake)), "step": step,
        "num_generated": num_generated, "reference": str(reference) if reference else None,
        "seed": p.seed, "truncation": p.truncation or None, "protocol": p.name or None,
    }
    provenance = {}
    for m in p.metrics:
        entry = {"metric": m, **common}
        if m in FEATURE_METRICS:
            n_real = ref_info.get("count")
            ref_name = reference.name if reference else ""
            entry.update({"name": f"{m}{_count_label(num_generated)}_{ref_name}_{backbone.name}",
                          "backbone": backbone.provenance(), "resize": backbone.resize,
                          "weights_sha256": backbone.weights_sha256, "num_real": n_real if m != "is" else None,
                          "reference_cache": ref_info.get("cache")})
            entry["settings"] = {"kid": {"subset_size": p.kid_subset_size, "subsets": p.kid_subsets},
                                 "pr": {"k": p.pr_k, "dc_k": p.dc_k}, "is": {"splits": p.is_splits},
                                 "fid": {"allow_rank_deficient": p.allow_rank_deficient}}[m]
        elif m == "attr":
            entry["classifier"] = "gan.metrics.attributes, trained on the reference dataset's train split"
        provenance[m] = entry
    result = {"metrics": values, "provenance": provenance,
              "run": {"protocol": to_dict(p), "processes": size, "device": str(device), "timing": timing,
                      "converted_images": {**generated_info.get("converted", {})}, "versions": versions()}}
    return result, _write_result(result, export, p.metrics, out)


def _write_result(result: dict, export: Path | None, metrics: list[str], out: str | None) -> Path:
    """The JSON file (--out, else next to the run or in the current folder) and the run's metrics.jsonl."""
    run_dir = export.parent if export is not None and export.name == "generator" else None
    path = Path(out) if out else (run_dir or Path.cwd()) / f"eval-{'-'.join(metrics)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    if run_dir is not None:
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
    return path


def _evaluate_repair(p: EvalProtocol, checkpoint: str, out: str | None, device, progress: bool):
    from gan.repair.evaluate import evaluate_repair

    bad = [m for m in p.metrics if m not in (*REPAIR_METRICS, "vfid")]
    if bad:
        raise GanError(f"metrics {bad} do not apply to a video-repair model; use {', '.join(REPAIR_METRICS)}")
    started = time.time()
    res = evaluate_repair(checkpoint, p.data, num=p.num, device=device, progress=progress, vfid="vfid" in p.metrics)
    classifier_accuracy = res["per_method"].pop("video_classifier_test_accuracy", None)
    export = resolve_export(checkpoint)
    values = {method: {m: scores[m] for m in p.metrics} for method, scores in res["per_method"].items()}
    result = {"metrics": values["model"], "baselines": {k: v for k, v in values.items() if k != "model"},
              "per_kind": res["per_kind"],
              "provenance": {m: {"metric": m, "generated": str(export), "reference": p.data, "clips": res["clips"],
                                 "masks": f"gan.data.damage.fixed_eval_masks(seed={res['mask_seed']})",
                                 "window": res["window"], "protocol": p.name or None,
                                 **({"features": "gan.metrics.video_classifier (offline analogue of VFID, not "
                                                 "comparable with I3D VFID)",
                                     "classifier_test_accuracy": classifier_accuracy} if m == "vfid" else {})}
                             for m in p.metrics},
              "run": {"protocol": to_dict(p), "seconds": round(time.time() - started, 1),
                      "method_seconds": res["seconds"], "versions": versions()}}
    return result, _write_result(result, export, p.metrics, out)


def _evaluate_joint(p: EvalProtocol, checkpoint: str, out: str | None, device, progress: bool):
    from gan.joint.evaluate import evaluate_joint

    started = time.time()
    res = evaluate_joint(checkpoint, p.data, p.metrics, num=p.num, seed=p.seed, truncation=p.truncation or None,
                         batch_size=p.batch_size, device=device, progress=progress)
    export, d = resolve_export(checkpoint), res["details"]
    features = {"fid": "image attribute classifier (gan.metrics.attributes), not comparable with Inception FID",
                "fad": "audio attribute classifier on log-mels (gan.joint.audio_classifier), not comparable with "
                       "VGGish FAD",
                "consistency": "image attribute classifier on each image vs audio attribute classifier on its sound",
                "attr": "each modality's classifier vs the caption's attributes"}
    result = {"metrics": res["metrics"],
              "provenance": {m: {"metric": m, "name": f"{m}{_count_label(p.num)}_{Path(p.data).name}_joint",
                                 "generated": str(export), "reference": p.data, "features": features[m], **d}
                             for m in p.metrics},
              "run": {"protocol": to_dict(p), "seconds": round(time.time() - started, 1), "versions": versions()}}
    return result, _write_result(result, export, p.metrics, out)


_SCALARS = ("fid", "kid", "kid_std", "is", "is_std", "precision", "recall", "density", "coverage")


def print_table(result: dict) -> None:
    m = result["metrics"]
    if "consistency" in m or "fad" in m:  # joint generator
        for k in ("fid", "fad"):
            if k in m:
                print(f"  {k:<12}{m[k]:>14.6g}")
        cols = ("color", "shape", "size", "position", "mean", "all")
        rows = [(f"consistency {k}", v) for k, v in m.get("consistency", {}).items()]
        rows += [(f"attr {k} vs caption", v) for k, v in m.get("attr", {}).items()]
        print(f"{'':<32}" + "".join(f"{c:>10}" for c in cols))
        for name, v in rows:
            print(f"{name:<32}" + "".join(f"{v[c]:>10.3f}" for c in cols))
        return
    if "baselines" in result:  # video repair: the model against the baselines
        names = list(m)
        print(f"{'method':<18}" + "".join(f"{k:>11}" for k in names))
        for method, scores in {"model": m, **result["baselines"]}.items():
            print(f"{method:<18}" + "".join(f"{scores[k]:>11.4f}" for k in names))
        return
    scalars = [(k, m[k]) for k in _SCALARS if k in m]
    if scalars:
        base = {k: v for k, v in result["provenance"].items() if k in FEATURE_METRICS}
        any_entry = next(iter(base.values()))
        print(f"feature metrics ({any_entry['backbone']['name']} features, resize {any_entry['resize']}, "
              f"{any_entry['num_generated']} generated vs {any_entry['num_real']} reference)")
        for k, v in scalars:
            print(f"  {k:<12}{v:>14.6g}")
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
