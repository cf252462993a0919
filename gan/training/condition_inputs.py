"""Each training batch's condition inputs, per modality, ready for the Conditioner.

Frozen encoders give the same output every epoch, so their embeddings are computed once (text:
the on-disk cache of gan.encoders.cache; audio/image from aligned encoders: in memory at start).
Trainable encoders get raw input every step: token ids, waveforms from the split's audio bank,
or the batch's own real images (an image's embedding conditions the GAN that must re-create
its content: instance conditioning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gan.encoders.base import Embeddings


@dataclass
class EmbeddingTable:
    pooled: torch.Tensor  # (N, D) float32
    tokens: torch.Tensor  # (N, L, Dt) float16: conditioning does not need more, memory does
    mask: torch.Tensor  # (N, L) bool

    def lookup(self, rows: torch.Tensor) -> Embeddings:
        rows = torch.as_tensor(rows, dtype=torch.long).cpu()
        return Embeddings(pooled=self.pooled[rows], tokens=self.tokens[rows].float(), mask=self.mask[rows])


@torch.no_grad()
def embed_table(encoder, inputs: torch.Tensor, to_float, batch_size: int = 256, desc: str = "",
                progress: bool = True) -> EmbeddingTable:
    """Run a frozen encoder over all `inputs` (raw, converted batch-wise by `to_float`)."""
    if hasattr(encoder, "eval"):
        encoder.eval()
    pooled, tokens, masks = [], [], []
    for lo in tqdm(range(0, len(inputs), batch_size), desc=desc, disable=not progress):
        out = encoder(to_float(inputs[lo:lo + batch_size]))
        pooled.append(out.pooled.float().cpu())
        tokens.append(out.tokens.half().cpu())
        masks.append(out.mask.bool().cpu())
    return EmbeddingTable(torch.cat(pooled), torch.cat(tokens), torch.cat(masks))


class ConditionInputs:
    def __init__(self, cfg, dataset, conditioner, main_process_first, progress: bool):
        from gan.encoders.cache import cached_text_embeddings

        self.dataset = dataset
        self.tables: dict[str, object] = {}
        self.learned_text = None
        self.bank = None
        self.live_image = False
        root = Path(cfg.data.root)
        for m in conditioner.modalities:
            encoder = conditioner.encoder(m)
            trainable = m in conditioner.encoders
            if m == "text":
                if trainable:
                    self.learned_text = encoder
                else:
                    with main_process_first():  # one process writes the cache, the others read it
                        self.tables[m] = cached_text_embeddings(encoder, dataset.texts, root / ".cache",
                                                                progress=progress)
            elif m == "audio":
                from gan.data.audio_bank import audio_bank, to_float

                with main_process_first():
                    bank = audio_bank(dataset.split_dir, dataset.rows, encoder.config.sample_rate,
                                      encoder.config.clip_seconds, progress=progress)  # (N, T) int16
                if trainable:
                    self.bank = bank
                else:
                    self.tables[m] = embed_table(encoder, bank, to_float, desc="embedding audio", progress=progress)
            else:
                if trainable:
                    self.live_image = True
                else:
                    images = dataset.images if dataset.images is not None else torch.stack(
                        [dataset[dataset._first_row[k]]["image"] for k in range(len(dataset.files))])
                    table = embed_table(encoder, images, _image_float, desc="embedding images", progress=progress)
                    rows = torch.tensor(dataset.image_of_row)
                    self.tables[m] = EmbeddingTable(table.pooled[rows], table.tokens[rows], table.mask[rows])

    def __call__(self, index: torch.Tensor, real: torch.Tensor, device) -> dict:
        """modality -> Embeddings (frozen) or raw input (trainable) for dataset rows `index`."""
        out = {m: t.lookup(index).to(device) for m, t in self.tables.items()}
        if self.learned_text is not None:
            out["text"] = self.learned_text.token_ids([self.dataset.texts[i] for i in index.tolist()]).to(device)
        if self.bank is not None:
            from gan.data.audio_bank import to_float

            out["audio"] = to_float(self.bank[index.cpu()]).to(device)
        if self.live_image:
            out["image"] = real.contiguous()
        return out


def _image_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x
