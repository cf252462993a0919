"""How far can a frozen text encoder place the held-out caption wordings? (a ceiling, not a model)

Each test caption is matched to its nearest training caption by the encoder's pooled vector
(cosine), and that training caption's attributes are scored against the test caption's. A
generator conditioned on this frozen vector sees no more than the encoder does: when the nearest
training caption of "a crimson dot ..." is a purple one, a picture of a purple shape is the
encoder's reading, not the generator's mistake. Rows are split by the test caption's `wording`
(the built-in data: "seen" = train templates and synonyms, "heldout" = a template and/or
synonyms never used in training). A second table lists, per held-out synonym, the three seen
synonyms nearest to it as single words.

    .venv/bin/python bench/text_ceiling.py --data datasets/shapes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from gan.data.metadata import read_metadata
from gan.data.shapes import ATTRIBUTES, SYNONYMS
from gan.encoders import build_text_encoder
from gan.errors import GanError


def pooled(encoder, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    return F.normalize(torch.cat([encoder.encode(texts[i:i + batch_size]).pooled
                                  for i in range(0, len(texts), batch_size)]), dim=1)  # (N, D)


def nearest_rows(query: torch.Tensor, bank: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    return torch.cat([(query[i:i + chunk] @ bank.T).argmax(1) for i in range(0, len(query), chunk)])  # (N,)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset root with train/ and test/ (gan data shapes)")
    ap.add_argument("--encoder", default="minilm", help="'minilm' or a HuggingFace model id / local folder")
    ap.add_argument("--train-rows", type=int, default=20000, help="training captions to match against")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data)
    train = read_metadata(root / "train")[:args.train_rows]
    test = read_metadata(root / "test")
    if not train or not test:
        raise SystemExit(f"error: {root}: expected train/ and test/ splits with rows (gan data shapes --out {root})")
    encoder = build_text_encoder(args.encoder)
    bank = pooled(encoder, [r["text"] for r in train])
    match = nearest_rows(pooled(encoder, [r["text"] for r in test]), bank).tolist()
    names = list(ATTRIBUTES)

    print(f"# text ceiling: {args.encoder}, {len(test)} test captions against {len(train)} training captions")
    print("\n| test captions | rows | " + " | ".join(names) + " | mean |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " | --- |")
    for wording in sorted({r.get("wording", "all") for r in test}):
        idx = [i for i, r in enumerate(test) if r.get("wording", "all") == wording]
        acc = [sum(test[i]["attributes"][n] == train[match[i]]["attributes"][n] for i in idx) / len(idx)
               for n in names]
        print(f"| {wording} | {len(idx)} | " + " | ".join(f"{a:.3f}" for a in acc) + f" | {sum(acc) / len(acc):.3f} |")

    print("\n| held-out word (class) | nearest seen words (cosine) |")
    print("| --- | --- |")
    for key in SYNONYMS:
        seen = [(w, c) for c, (ws, _) in SYNONYMS[key].items() for w in ws]
        vectors = pooled(encoder, [w for w, _ in seen])
        for cls, (_, held) in SYNONYMS[key].items():
            for word in held:
                sims = (pooled(encoder, [word]) @ vectors.T)[0]
                top = sims.topk(min(3, len(seen))).indices.tolist()
                print(f"| {word} ({cls}) | " + ", ".join(f"{seen[i][0]} {sims[i]:.2f}" for i in top) + " |")


if __name__ == "__main__":
    try:
        main()
    except GanError as e:
        raise SystemExit(f"error: {e}")
