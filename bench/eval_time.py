"""Time of `gan eval` vs the feature pass alone (goal: at most 1.2x).

Everything but the backbone's forward pass (generation, uint8 conversion, gathering, FID/KID/IS
and precision/recall/density/coverage) is overhead. The reference features are cached by a
first, untimed call, as they are for every run after a split's first evaluation.

    .venv/bin/python bench/eval_time.py --checkpoint runs/t2i_shapes --data datasets/shapes/test \
        --num 10000 --backbone inception --inception-weights random
`--inception-weights random` writes a random-weights file of the exact Inception architecture:
the same work as the real weights, so the timing holds for them (the numbers do not).
Both wall time and this process's CPU time (time.process_time) are reported; with `--threads 1`
the CPU-time ratio does not depend on what else the machine is running.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from gan.evaluation import evaluate
from gan.metrics.backbones import build_backbone, write_random_inception_weights
from gan.metrics.protocol import load_protocol
from gan.models.generator import ConditionalGenerator
from gan.sampling import Sampler, to_uint8


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--num", type=int, default=10000)
    ap.add_argument("--backbone", default="inception")
    ap.add_argument("--inception-weights", default="random")
    ap.add_argument("--metrics", default="fid,kid,is,pr")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--kid-subset-size", type=int, default=1000, help="capped at --num")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    weights = args.inception_weights
    if args.backbone == "inception" and weights == "random":
        weights = write_random_inception_weights(Path(tempfile.mkdtemp()) / "random-inception.safetensors")
    protocol = load_protocol(None, {"metrics": args.metrics.split(","), "data": args.data, "num": args.num,
                                    "backbone": args.backbone, "inception_weights": weights,
                                    "batch_size": args.batch_size, "allow_rank_deficient": True,
                                    "kid_subset_size": min(args.kid_subset_size, args.num)})
    out = Path(tempfile.mkdtemp()) / "eval.json"
    t0 = time.time()
    # Fills the reference cache (keyed by the real images, not by how many are generated), so a
    # small first call is enough; the timed call below finds the cache as every later run would.
    warm = load_protocol(None, {**dataclasses.asdict(protocol), "num": min(args.num, 200), "kid_subset_size": 100})
    evaluate(warm, checkpoint=args.checkpoint, out=str(out))
    first = time.time() - t0
    t0, c0 = time.time(), time.process_time()
    result, _ = evaluate(protocol, checkpoint=args.checkpoint, out=str(out))
    total, total_cpu = time.time() - t0, time.process_time() - c0

    # The feature pass alone, on the very same images, made beforehand.
    sampler = Sampler.from_pretrained(args.checkpoint)
    rows = [json.loads(line) for line in (Path(args.data) / "metadata.jsonl").read_text().splitlines() if line.strip()]
    z = ConditionalGenerator.sample_noise(args.num, sampler.generator.config.z_dim, torch.Generator().manual_seed(0))
    prompts = [rows[i % len(rows)]["text"] for i in range(args.num)]
    images = to_uint8(sampler.generate_with_noise({"texts": prompts}, z))
    backbone = build_backbone(args.backbone, inception_weights=weights, dataset_root=str(Path(args.data).parent),
                              resolution=sampler.resolution)
    t0, c0 = time.time(), time.process_time()
    with torch.no_grad():
        for lo in range(0, args.num, args.batch_size):
            backbone(images[lo:lo + args.batch_size])
    features, features_cpu = time.time() - t0, time.process_time() - c0
    timing = result["run"]["timing"]
    print(json.dumps({"num": args.num, "backbone": args.backbone, "first_call_s": round(first, 1),
                      "eval_s": round(total, 1), "feature_pass_s": round(features, 1),
                      "ratio": round(total / features, 3), "eval_cpu_s": round(total_cpu, 1),
                      "feature_pass_cpu_s": round(features_cpu, 1), "ratio_cpu": round(total_cpu / features_cpu, 3),
                      "eval_timing": timing,
                      "threads": torch.get_num_threads()}, indent=2))


if __name__ == "__main__":
    main()
