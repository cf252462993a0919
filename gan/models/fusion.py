"""Fusing the condition embeddings of several modalities into the one condition G and D consume.

Every modality (text, audio, image, ...) arrives as an `Embeddings` triple of its own widths.
`ConditionFusion` projects each to common widths and combines them into one triple: a pooled
vector (B, out_dim) and one token sequence (B, sum of L, token_out_dim).

Design choices:
- A missing modality (None / absent key), or one dropped by modality dropout, is replaced by a
  LEARNED null embedding (a pooled vector and one token) in the encoder's output space, before
  the projections. "No audio" then is a signal the model learns, never zeros posing as data,
  and the same G serves every subset of modalities (and all-null = unconditional).
- Each input passes a LayerNorm before its projection: encoders differ wildly in scale (MiniLM is
  unit-norm, a ResNet is not), and without it the louder modality would dominate every sum.
- Modes, for the pooled output (the token output is always the concatenated projected tokens):
  "concat":    each modality projects to its own slice of out_dim (sizes differ by at most one),
               so no modality can overwrite another's channels.
  "weighted":  sum_m lambda_m f_m. lambda is fixed by the config or learned (softmax of logits,
               equal at init); forward(weights=...) overrides it at sampling time. Weights are
               always normalised to sum 1, so the condition keeps the scale G was trained on;
               tokens are scaled by lambda_m too, and a modality with lambda_m = 0 is masked out
               (G's cross-attention layer-normalises tokens, so scaling alone cannot silence it).
  "attention": NUM_QUERIES learned queries cross-attend over all projected tokens (plus a learned
               modality-type embedding), and a linear maps the attended queries to out_dim.
  "gated":     gate_m = sigmoid(w_m . [f_1, ..., f_M]) per sample, output sum_m gate_m f_m.
- A modality absent from the whole batch contributes its single null token; a present one keeps
  its L positions (a dropped sample gets the null token first and masks the rest), so L is
  fixed within a batch.
"""

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from gan.encoders.base import Embeddings
from gan.errors import GanError

MODES = ("concat", "weighted", "attention", "gated")
NUM_QUERIES = 4  # learned queries of the "attention" mode
HEAD_DIM = 64


def _split(total: int, parts: int) -> list[int]:
    """`total` channels as `parts` slices whose sizes differ by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _normalise(weights: dict, names: tuple[str, ...], where: str) -> dict[str, float]:
    """Validated lambdas for every modality (unlisted ones get 0), scaled to sum 1."""
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise GanError(f"ConditionFusion {where}: unknown modalities {unknown}; expected some of {list(names)}")
    try:
        values = {m: float(v) for m, v in weights.items()}
    except (TypeError, ValueError):
        values = {}
    valid = len(values) == len(weights) and all(0 <= v < float("inf") for v in values.values())
    if not valid or not sum(values.values()) > 0:
        raise GanError(f"ConditionFusion {where}: weights must be finite numbers >= 0, not all 0; got {weights}")
    total = sum(values.values())
    return {m: values.get(m, 0.0) / total for m in names}


def _null(width: int) -> nn.Parameter:
    # small but not zero: a zero vector would pass the input LayerNorm as exactly zero
    return nn.Parameter(0.02 * torch.randn(width))


class ConditionFusion(ModelMixin, ConfigMixin):
    """{modality: Embeddings or None} -> one `Embeddings` (pooled (B, out_dim), tokens (B, L, token_out_dim))."""

    @register_to_config
    def __init__(
        self,
        modalities: tuple[str, ...] = ("text",),  # modality names in a fixed order, e.g. ("text", "audio", "image")
        pooled_dims: tuple[int, ...] = (384,),  # each modality's pooled width, in the order of `modalities`
        token_dims: tuple[int, ...] = (384,),  # each modality's token width, in the order of `modalities`
        mode: str = "concat",  # how pooled vectors combine: "concat" | "weighted" | "attention" | "gated"
        out_dim: int = 256,  # width of the fused pooled condition
        token_out_dim: int = 256,  # width of the fused token sequence
        weights: tuple[float, ...] | None = None,  # "weighted": fixed lambdas (sum-1 normalised); None = learned
        modality_dropout: float = 0.0,  # training only: per-sample chance to swap a modality for its null (>= 1 kept)
    ):
        super().__init__()
        names = tuple(modalities)
        M = len(names)
        if M == 0 or len(set(names)) != M or any(not isinstance(n, str) or not n or "." in n for n in names):
            raise GanError(
                f"ConditionFusion: modalities must be distinct non-empty names without '.', got {modalities!r}"
            )
        for field, dims in (("pooled_dims", pooled_dims), ("token_dims", token_dims)):
            if len(dims) != M or any(not isinstance(d, int) or d < 1 for d in dims):
                raise GanError(
                    f"ConditionFusion: {field} must be {M} positive widths (one per modality), got {dims!r}"
                )
        if mode not in MODES:
            raise GanError(f"ConditionFusion: mode must be one of {', '.join(MODES)}; got {mode!r}")
        min_out = M if mode == "concat" else 1  # concat needs a channel per modality
        if out_dim < min_out or token_out_dim < 1:
            raise GanError(
                f"ConditionFusion: out_dim must be >= {min_out} and token_out_dim >= 1, got {out_dim}, {token_out_dim}"
            )
        if weights is not None:
            if mode != "weighted":
                raise GanError(f"ConditionFusion: weights apply only to mode 'weighted', not {mode!r}")
            if len(weights) != M:
                raise GanError(
                    f"ConditionFusion: weights must give one lambda per modality {list(names)}, got {weights!r}"
                )
            _normalise(dict(zip(names, weights)), names, "weights")
        if not 0.0 <= modality_dropout <= 1.0:
            raise GanError(f"ConditionFusion: modality_dropout must be in [0, 1], got {modality_dropout}")

        widths = _split(out_dim, M) if mode == "concat" else [out_dim] * M
        self.pooled_proj = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, w)) for m, d, w in zip(names, pooled_dims, widths)}
        )
        self.token_proj = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, token_out_dim)) for m, d in zip(names, token_dims)}
        )
        # Learned "this modality is absent" embeddings, in each encoder's own output space.
        self.null_pooled = nn.ParameterDict({m: _null(d) for m, d in zip(names, pooled_dims)})
        self.null_token = nn.ParameterDict({m: _null(d) for m, d in zip(names, token_dims)})
        if mode == "weighted" and weights is None:
            self.weight_logits = nn.Parameter(torch.zeros(M))  # softmax -> equal lambdas at init
        if mode == "attention":
            heads = max(1, token_out_dim // HEAD_DIM)
            while token_out_dim % heads:
                heads -= 1
            self.queries = nn.Parameter(torch.randn(NUM_QUERIES, token_out_dim) * 0.02)  # (Q, Dt)
            self.type_embed = nn.Parameter(torch.randn(M, token_out_dim) * 0.02)  # (M, Dt)
            self.norm_kv = nn.LayerNorm(token_out_dim)
            self.attn = nn.MultiheadAttention(token_out_dim, heads, batch_first=True)
            self.attn_out = nn.Linear(NUM_QUERIES * token_out_dim, out_dim)
        if mode == "gated":
            self.gate = nn.Linear(M * out_dim, M)
            nn.init.zeros_(self.gate.weight)  # every gate starts at sigmoid(0) = 0.5
            nn.init.zeros_(self.gate.bias)

    def forward(
        self,
        inputs: dict[str, Embeddings | None],
        weights: dict[str, float] | None = None,
        batch_size: int | None = None,
    ) -> Embeddings:
        """inputs: modality -> Embeddings (pooled (B, D_m), tokens (B, L_m, Dt_m), mask (B, L_m)) or None.

        weights: "weighted" mode only, a sampling-time {modality: lambda} replacing the
        configured/learned lambdas (normalised to sum 1; unlisted modalities get 0).
        batch_size: needed only when no modality is present (an all-null, unconditional batch).
        """
        cfg = self.config
        names = tuple(cfg.modalities)
        inputs = self._check_inputs(inputs, names)
        present = [m for m in names if inputs.get(m) is not None]
        B = len(inputs[present[0]]) if present else batch_size
        if not isinstance(B, int) or B < 1:
            raise GanError("ConditionFusion: no modality present; pass batch_size for an all-null batch")
        keep = self._keep_masks(present, B)  # modality -> (B,) bool, True = real; {} = keep all

        pooled, tokens, masks = {}, {}, {}
        for m in names:
            p, t, k = self._with_nulls(m, inputs.get(m), keep.get(m), B)
            pooled[m] = self.pooled_proj[m](p)  # (B, out_dim) or (B, slice)
            tokens[m] = self.token_proj[m](t)  # (B, L_m, token_out_dim)
            masks[m] = k  # (B, L_m)

        if cfg.mode == "weighted":
            lam = self._lambdas(weights, names)  # (M,)
            out = sum(lam[i] * pooled[m] for i, m in enumerate(names))  # (B, out_dim)
            for i, m in enumerate(names):
                tokens[m] = tokens[m] * lam[i]
                masks[m] = masks[m] & (lam[i] > 0)
        elif weights is not None:
            raise GanError(f"ConditionFusion: weights apply only to mode 'weighted', this model uses {cfg.mode!r}")
        elif cfg.mode == "concat":
            out = torch.cat([pooled[m] for m in names], dim=1)  # (B, out_dim)
        elif cfg.mode == "gated":
            stacked = torch.stack([pooled[m] for m in names], dim=1)  # (B, M, out_dim)
            gates = torch.sigmoid(self.gate(stacked.flatten(1)))  # (B, M)
            out = (gates.unsqueeze(-1) * stacked).sum(1)  # (B, out_dim)

        all_tokens = torch.cat([tokens[m] for m in names], dim=1)  # (B, L, token_out_dim)
        all_masks = torch.cat([masks[m] for m in names], dim=1)  # (B, L)
        if cfg.mode == "attention":
            out = self._attend(tokens, all_masks, names, B)
        return Embeddings(pooled=out, tokens=all_tokens, mask=all_masks)

    def _check_inputs(self, inputs, names) -> dict:
        if not isinstance(inputs, dict):
            raise GanError(
                f"ConditionFusion: inputs must be a dict modality -> Embeddings or None, got {type(inputs).__name__}"
            )
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise GanError(f"ConditionFusion: unknown modalities {unknown}; this model fuses {list(names)}")
        B = None
        for i, m in enumerate(names):
            e = inputs.get(m)
            if e is None:
                continue
            if not isinstance(e, Embeddings):
                raise GanError(f"ConditionFusion: inputs[{m!r}] must be Embeddings or None, got {type(e).__name__}")
            B = len(e) if B is None else B
            D, Dt = self.config.pooled_dims[i], self.config.token_dims[i]
            ok = (e.pooled.dim() == 2 and e.tokens.dim() == 3 and e.mask.dim() == 2 and e.mask.dtype == torch.bool
                  and e.pooled.shape == (B, D) and e.tokens.shape[0] == B and e.tokens.shape[2] == Dt
                  and e.tokens.shape[1] >= 1 and e.mask.shape == e.tokens.shape[:2])
            if not ok:
                raise GanError(
                    f"ConditionFusion: inputs[{m!r}] has pooled {tuple(e.pooled.shape)}, "
                    f"tokens {tuple(e.tokens.shape)}, "
                    f"mask {tuple(e.mask.shape)} {e.mask.dtype}; expected pooled ({B}, {D}) (pooled_dims[{i}]), "
                    f"tokens ({B}, L, {Dt}) (token_dims[{i}]) and a bool mask ({B}, L)"
                )
        return inputs

    def _keep_masks(self, present: list[str], B: int) -> dict[str, torch.Tensor]:
        """Per-sample modality dropout (training only); a sample never loses all its real modalities."""
        p = self.config.modality_dropout
        if not present or not self.training or p == 0:
            return {}
        device = self.null_token[present[0]].device
        keep = torch.rand(B, len(present), device=device) >= p  # (B, P)
        # samples that lost everything get back one present modality, chosen uniformly
        rescue = torch.randint(len(present), (B,), device=device)  # (B,)
        keep |= ~keep.any(1, keepdim=True) & F.one_hot(rescue, len(present)).bool()
        return {m: keep[:, i] for i, m in enumerate(present)}

    def _with_nulls(self, m: str, e: Embeddings | None, keep: torch.Tensor | None, B: int):
        """The encoder output of `m`, with the learned null where it is missing or dropped."""
        null_p, null_t = self.null_pooled[m], self.null_token[m]
        if e is None:  # absent from the whole batch: one null token
            return (null_p.expand(B, -1), null_t.expand(B, 1, -1),
                    torch.ones(B, 1, dtype=torch.bool, device=null_t.device))
        pooled, tokens, mask = e.pooled.to(null_p), e.tokens.to(null_t), e.mask.to(null_t.device)
        if keep is None:
            return pooled, tokens, mask
        L = tokens.shape[1]
        null_seq = torch.cat([null_t[None], null_t.new_zeros(L - 1, null_t.shape[0])])  # (L, Dt_m)
        null_mask = torch.arange(L, device=mask.device) == 0  # (L,) only the null token is real
        pooled = torch.where(keep[:, None], pooled, null_p)  # (B, D_m)
        tokens = torch.where(keep[:, None, None], tokens, null_seq)  # (B, L, Dt_m)
        mask = torch.where(keep[:, None], mask, null_mask)  # (B, L)
        return pooled, tokens, mask

    def _lambdas(self, weights: dict[str, float] | None, names: tuple[str, ...]) -> torch.Tensor:
        device = self.null_token[names[0]].device
        if weights is not None:
            if not isinstance(weights, dict):
                raise GanError(
                    f"ConditionFusion weights: expected a dict modality -> weight, got {type(weights).__name__}"
                )
            lam = _normalise(weights, names, "forward(weights=...)")
            return torch.tensor([lam[m] for m in names], device=device)  # (M,)
        if self.config.weights is not None:
            lam = _normalise(dict(zip(names, self.config.weights)), names, "weights")
            return torch.tensor([lam[m] for m in names], device=device)
        return torch.softmax(self.weight_logits, dim=0)  # (M,)

    def _attend(self, tokens: dict, mask: torch.Tensor, names: tuple[str, ...], B: int) -> torch.Tensor:
        """Learned queries read all modalities' tokens; returns the pooled condition (B, out_dim)."""
        kv = torch.cat([tokens[m] + self.type_embed[i] for i, m in enumerate(names)], dim=1)  # (B, L, Dt)
        kv = self.norm_kv(kv)
        # a sample whose tokens are all masked would softmax over nothing (NaN): let it see all
        ignore = ~(mask | ~mask.any(1, keepdim=True))  # (B, L), True = not attended
        q = self.queries.expand(B, -1, -1)  # (B, Q, Dt)
        attended, _ = self.attn(q, kv, kv, key_padding_mask=ignore, need_weights=False)  # (B, Q, Dt)
        return self.attn_out(attended.flatten(1))  # (B, out_dim)
