"""Metrics during training: every `train.eval_every` steps the EMA generator is measured on the
eval split with the same code as `gan eval`, and the numbers go to the trackers and stats.jsonl.

The reference features are computed (or read from the cache) once at start; each evaluation
then only generates `train.eval_num` images and runs the backbone on them. Every process takes
part (the samples are sharded by index), so it also works under DDP.
"""

from __future__ import annotations

from pathlib import Path

from gan.config import Config
from gan.data.metadata import read_metadata
from gan.errors import GanError
from gan.metrics.protocol import FEATURE_METRICS, EvalProtocol, validate_protocol
from gan.sampling import Sampler


class PeriodicEval:
    def __init__(self, cfg: Config, device, progress: bool):
        from gan.evaluation import _resolve_backbone_name

        t = cfg.train
        self.split = Path(cfg.data.root) / cfg.data.eval_split
        if not (self.split / "metadata.jsonl").is_file():
            raise GanError(f"train.eval_every > 0 needs the eval split {self.split}/metadata.jsonl (data.eval_split)")
        self.rows = read_metadata(self.split)
        self.protocol = EvalProtocol(
            name="train-periodic", metrics=list(t.eval_metrics), data=str(self.split), num=t.eval_num,
            backbone=t.eval_backbone, seed=t.seed, kid_subset_size=min(1000, t.eval_num, len(self.rows)),
            kid_subsets=50, allow_rank_deficient=True)  # a curve to compare runs, not a headline number
        validate_protocol(self.protocol)
        self.fm = None
        feature_metrics = [m for m in t.eval_metrics if m in FEATURE_METRICS]
        if feature_metrics:
            from gan.metrics.backbones import build_backbone
            from gan.metrics.features import FeatureMetrics
            from gan.metrics.reference import reference_features

            name = _resolve_backbone_name(self.protocol, self.rows)
            backbone = build_backbone(name, dataset_root=str(self.split.resolve().parent),
                                      resolution=cfg.data.resolution, device=device)
            p = self.protocol
            self.fm = FeatureMetrics(backbone, feature_metrics, kid_subset_size=p.kid_subset_size,
                                     kid_subsets=p.kid_subsets, allow_rank_deficient=True, seed=p.seed)
            if self.fm.needs_real:
                features, _ = reference_features(self.split, self.fm, progress=progress)
                self.fm.set_reference(features)

    def __call__(self, generator, conditioner, device) -> dict[str, float]:
        from gan.evaluation import _generate_pass, attribute_metric
        from gan.metrics.features import world

        was_training = generator.training
        sampler = Sampler(generator, conditioner, device)
        images, _ = _generate_pass(sampler, self.rows, self.split, self.protocol, self.fm,
                                   keep_images="attr" in self.protocol.metrics, progress=False)
        generator.train(was_training)
        out: dict[str, float] = {}
        if self.fm is not None:
            out.update({f"eval/{k}": float(v) for k, v in self.fm.compute().items()
                        if k not in ("num_generated", "num_real")})
            self.fm.reset()
        if images is not None and world()[0] == 0:
            attr = attribute_metric(images, self.rows, self.split)
            out.update({f"eval/attr_{group}": acc["mean"] for group, acc in attr.items()
                        if isinstance(acc, dict) and "mean" in acc and group != "classifier_real_test_accuracy"})
        return out
