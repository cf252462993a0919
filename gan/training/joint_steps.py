"""One D step and one G step of the joint (image + sound) task, and the trainer's hook for it.

The same Trainer runs it (checkpoints, EMA, logging, resume); only the data (an image and the
log-mel of its own sound), the models (gan.joint.models) and these steps differ. The loss maths
is gan.losses' pure functions:

    D: for each head h in (image, audio, joint): D_LOSSES(real_h, fake_h, caption-mismatch_h)
       + pair_weight * fake term of the joint head on re-paired real rows (image i, sound i+1)
       + near_miss_weight * the same on near misses (image i, the real sound of a row differing
         from row i in exactly one attribute: gan.data.attribute_index)
       + free_pair_weight * the re-paired rows' term once more against no caption
       + lazy R1 on the real image and spectrogram together
    G: sum over the three heads of G_LOSSES(fake_h)
       + sonify_weight * L1(G's sound of each REAL picture, its real sound)   (audio_source = "image")

The re-paired rows are what pushes G to make the two agree: D's joint head learns that a real
picture with another sample's real sound is wrong, so only matching pairs score as real. A random
other row differs in several attributes, so the head can spot it by the easiest one alone; near
misses make it check every attribute.
"""

from __future__ import annotations

import torch

from gan import losses
from gan.augment import diff_augment
from gan.joint.models import HEADS


def shifted_pairs(batch: int, device) -> torch.Tensor:
    """(B, 2) long: image row i with the sound of row i+1 (mod B), the mismatched real pairs."""
    i = torch.arange(batch, device=device)
    return torch.stack([i, (i + 1) % batch], dim=1)


def drop_condition(cond: torch.Tensor, p: float, generator: torch.Generator | None = None,
                   token_mask: torch.Tensor | None = None):
    """Zero each row of (B, D) with probability p: the zero vector (and, for a generator reading
    words, no real token) means "no caption", so one model learns both the conditional and the
    unconditional distribution (sampled without a prompt). Returns cond, or (cond, token_mask)
    when a token_mask (B, L) is given."""
    if p <= 0:
        return cond if token_mask is None else (cond, token_mask)
    keep = torch.rand(cond.shape[0], 1, generator=generator, device=cond.device) >= p  # (B, 1)
    cond = cond * keep.to(cond.dtype)
    return cond if token_mask is None else (cond, token_mask & keep)


def drop_words(token_mask: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, L) bool token mask with each real token hidden (False) with probability p: G must read a
    caption from whichever of its words remain, as it must when a held-out template moves the words
    or a synonym it cannot place stands in for one."""
    if p <= 0:
        return token_mask
    return token_mask & (torch.rand(token_mask.shape, generator=generator, device=token_mask.device) >= p)


def blend_conditions(cond: torch.Tensor, share: float, tokens: torch.Tensor | None = None,
                     token_mask: torch.Tensor | None = None, generator: torch.Generator | None = None):
    """G's input for the blend option: each captioned row whose neighbour (row i-1, mod B) is
    captioned too is, with probability `share`, given a caption between the two — the pooled
    vectors interpolated at t ~ U(0, 1), and both captions' words to attend to. Held-out wordings
    land between the training captions like this; D scores these fakes against the no-caption
    (zero) condition, so it asks only that picture and sound be real and agree, not which caption
    they follow.

    cond (B, D) with zero rows = uncaptioned; tokens (B, L, T) and token_mask (B, L) or None.
    Returns (g_cond (B, D), g_tokens (B, 2L, T) or None, g_mask (B, 2L) or None, d_cond (B, D)):
    G's condition, its words (the row's own, then its partner's for blended rows only) and the
    condition D judges the fake against (zero on blended rows)."""
    captioned = cond.abs().sum(dim=1) > 0  # (B,)
    partner = cond.roll(1, dims=0)
    u = torch.rand(cond.shape[0], 2, generator=generator, device=cond.device)  # (B, 2): pick, t
    pick = (u[:, 0] < share) & captioned & captioned.roll(1, dims=0)  # (B,)
    t = torch.where(pick, u[:, 1], torch.zeros_like(u[:, 1]))[:, None].to(cond.dtype)  # (B, 1)
    g_cond = torch.lerp(cond, partner, t)
    d_cond = cond * (~pick)[:, None].to(cond.dtype)
    if tokens is None:
        return g_cond, None, None, d_cond
    g_tokens = torch.cat([tokens, tokens.roll(1, dims=0)], dim=1)  # (B, 2L, T)
    g_mask = torch.cat([token_mask, token_mask.roll(1, dims=0) & pick[:, None]], dim=1)  # (B, 2L)
    return g_cond, g_tokens, g_mask, d_cond


def _augment(x, policy):
    return diff_augment(x, policy) if policy else x


def joint_discriminator_step(D, real_images, real_mels, fake_images, fake_mels, cond, *, kind: str,
                             mismatch_weight: float, pair_weight: float, gp_weight: float, apply_gp: bool,
                             augment: str, autocast, near_mels=None, near_miss_weight: float = 0.0,
                             fake_cond=None, free_pair_weight: float = 0.0):
    """Loss for D on a batch; fakes must be detached. Images get DiffAugment; spectrograms do not
    (a translation would move pitch and timing, which is content, not nuisance). near_mels
    (B, 1, M, M): row i's near-miss sound, used with near_miss_weight > 0. fake_cond (B, D): the
    condition the fakes are judged against when it is not the real rows' (blend_conditions).
    free_pair_weight: the re-paired rows once more, scored against no caption (zero condition), so
    the joint head's caption-free part must itself tell which sound belongs to which picture: with
    the caption, sound i+1 can be rejected for not matching caption i alone, and uncaptioned or
    blended fakes are judged by that caption-free part only."""
    b = real_images.shape[0]
    if apply_gp:
        real_images = real_images.detach().requires_grad_(True)
        real_mels = real_mels.detach().requires_grad_(True)
    images = torch.cat([_augment(real_images, augment), _augment(fake_images, augment)])  # (2B, 3, R, R)
    mels = torch.cat([real_mels, fake_mels])  # (2B, 1, M, M)
    conds = mismatch = None
    if cond is not None:
        conds = torch.cat([cond, cond if fake_cond is None else fake_cond])
        if mismatch_weight > 0:
            mismatch = torch.cat([cond.roll(1, dims=0), cond])
    pairs = shifted_pairs(b, images.device)  # (B, 2)
    near = near_miss_weight > 0 and near_mels is not None
    if near:  # image i with near_mels[i], which is audio row 2B + i of D's forward
        i = torch.arange(b, device=images.device)
        pairs = torch.cat([pairs, torch.stack([i, 2 * b + i], dim=1)])  # (2B, 2)
    free = free_pair_weight > 0 and cond is not None
    pair_cond = None
    if free:  # the shifted pairs again, last, against a zero condition
        pair_cond = torch.cat([cond[pairs[:, 0]], torch.zeros_like(cond)])
        pairs = torch.cat([pairs, pairs[:b]])
    with autocast():
        out = D(images, mels, conds, mismatch, pairs, near_mels if near else None, pair_cond)
    shifted = out["pairs"][:b].float()
    total, stats = 0.0, {}
    for h in HEADS:
        logits = out[h].float()
        mis = out.get(f"{h}_mismatch")
        mis = None if mis is None else mis[:b].float()
        loss_h = losses.D_LOSSES[kind](logits[:b], logits[b:], mis, mismatch_weight)
        total = total + loss_h
        stats[f"loss/d_{h}"] = loss_h.detach()
        stats[f"d/{h}_real"], stats[f"d/{h}_fake"] = logits[:b].detach().mean(), logits[b:].detach().mean()
    pair_term = losses.FAKE_TERMS[kind](shifted)
    total = total + pair_weight * pair_term
    stats["loss/d_pairs"], stats["d/pairs"] = pair_term.detach(), shifted.detach().mean()
    # Logged only: how well the joint head tells a real row's own sound from another row's (the
    # matched vs mismatched pair task alone, which falls as the joint head learns what belongs together).
    matched = out["joint"][:b].detach().float()
    stats["loss/joint_mismatch"] = losses.D_LOSSES[kind](matched, shifted.detach())
    if near:
        near_logits = out["pairs"][b:2 * b].float()
        near_term = losses.FAKE_TERMS[kind](near_logits)
        total = total + near_miss_weight * near_term
        stats["loss/d_near_miss"], stats["d/near_miss"] = near_term.detach(), near_logits.detach().mean()
        stats["loss/joint_near_miss"] = losses.D_LOSSES[kind](matched, near_logits.detach())
    if free:
        free_logits = out["pairs"][-b:].float()
        free_term = losses.FAKE_TERMS[kind](free_logits)
        total = total + free_pair_weight * free_term
        stats["loss/d_free_pairs"], stats["d/free_pairs"] = free_term.detach(), free_logits.detach().mean()
    stats["loss/d"] = total.detach()
    if apply_gp:
        real_sum = sum(out[h][:b].float() for h in HEADS)
        penalty = gp_weight * losses.r1_penalty(real_sum, (real_images, real_mels))
        stats["loss/gp"] = penalty.detach()
        total = total + penalty
    return total, stats


def joint_generator_step(D, fake_images, fake_mels, cond, *, kind: str, augment: str, autocast,
                         sonified=None, sonify_weight: float = 0.0):
    """Loss for G: D (frozen by the caller, unwrapped from DDP) scores the fakes on all three heads.
    sonified: (G's sounds of real pictures, those pictures' real sounds), both (B, 1, M, M), for the
    supervised picture-to-sound term (losses.sonify_loss) with sonify_weight."""
    with autocast():
        out = D(_augment(fake_images, augment), fake_mels, cond)
    per_head = {h: losses.G_LOSSES[kind](out[h].float()) for h in HEADS}
    if sonified is not None and sonify_weight > 0:
        per_head["sonify"] = sonify_weight * losses.sonify_loss(*sonified)
    total = sum(per_head.values())
    return total, {"loss/g": total.detach(), **{f"loss/g_{h}": v.detach() for h, v in per_head.items()}}


def joint_micro_step(trainer, batch, D_raw, autocast, micro: int = 0) -> dict:
    """The Trainer's micro-step for task = "joint" (it owns models, optimisers and accelerator)."""
    from gan.data.audio_bank import to_float
    from gan.joint.mel import waveform_to_mel

    cfg, acc, l = trainer.cfg, trainer.accelerator, trainer.cfg.loss
    real = batch["image"].to(acc.device, non_blocking=True)  # (B, 3, R, R)
    index = batch["index"]
    waves = to_float(trainer.audio_bank[index.cpu()]).to(acc.device)  # (B, T)
    real_mels = waveform_to_mel(waves, trainer.mel_settings)  # (B, 1, M, M)
    near_mels = None
    if cfg.joint.near_miss_weight > 0:
        near = trainer.attribute_index.near_misses(index.cpu())  # (B,) rows one attribute away
        near_mels = waveform_to_mel(to_float(trainer.audio_bank[near]).to(acc.device), trainer.mel_settings)
    if cfg.train.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
        real_mels = real_mels.contiguous(memory_format=torch.channels_last)
        near_mels = None if near_mels is None else near_mels.contiguous(memory_format=torch.channels_last)
    cond = tokens = mask = None
    if trainer.conditioner is not None:
        c = trainer._condition(index, real)
        if c.tokens is None:
            cond = drop_condition(c.pooled.float(), cfg.joint.caption_dropout)
        else:  # the dropped rows lose their words too
            cond, mask = drop_condition(c.pooled.float(), cfg.joint.caption_dropout, token_mask=c.mask)
            tokens = c.tokens.detach() if trainer.conditioner.trainable else c.tokens
    g_cond = cond.detach() if cond is not None and trainer.conditioner.trainable else cond
    d_fake_cond = None  # the fakes are judged against their own captions, unless blended
    if cfg.joint.blend_share > 0 and cond is not None:
        g_cond, tokens, mask, d_fake_cond = blend_conditions(g_cond, cfg.joint.blend_share, tokens, mask)
    if mask is not None:
        mask = drop_words(mask, cfg.joint.word_dropout)
    z = torch.randn(real.shape[0], cfg.model.z_dim, device=acc.device)
    sonify = cfg.joint.sonify_weight > 0  # the audio head also sounds out the real pictures, in the same pass
    with autocast():
        fake, fake_mels, *sonified = trainer.G(z, g_cond, tokens, mask, sound_of=real if sonify else None)

    trainer.D.requires_grad_(True)
    apply_gp = l.gp != "none" and trainer.step % l.gp_every == 0
    d_loss, stats = joint_discriminator_step(
        trainer.D, real, real_mels, fake.detach(), fake_mels.detach(), cond, kind=l.kind,
        mismatch_weight=l.mismatch_weight, pair_weight=cfg.joint.pair_weight, gp_weight=l.gp_weight * l.gp_every,
        apply_gp=apply_gp, augment=l.diffaugment, autocast=autocast, near_mels=near_mels,
        near_miss_weight=cfg.joint.near_miss_weight, fake_cond=d_fake_cond,
        free_pair_weight=cfg.joint.free_pair_weight)
    acc.backward(d_loss)
    trainer.optimizer_step("d", d_loss)  # through the non-finite guard (gan.training.guards)

    trainer.D.requires_grad_(False)
    judged = g_cond if d_fake_cond is None else d_fake_cond
    g_loss, g_stats = joint_generator_step(D_raw, fake, fake_mels, judged, kind=l.kind, augment=l.diffaugment,
                                           autocast=autocast, sonified=(sonified[0], real_mels) if sonify else None,
                                           sonify_weight=cfg.joint.sonify_weight)
    acc.backward(g_loss)
    trainer.optimizer_step("g", g_loss)
    return {**stats, **g_stats}


def mel_settings(cfg):
    from gan.joint.mel import MelSettings

    j = cfg.joint
    return MelSettings(sample_rate=j.sample_rate, seconds=j.seconds, n_fft=j.n_fft, hop_length=j.hop_length,
                       n_mels=j.n_mels, f_max=j.f_max, frames=j.n_mels)


def joint_audio(cfg, dataset, main_process_first, progress: bool):
    """The mel settings and the split's sounds as one (N, T) int16 bank (read once, cached on disk)."""
    from gan.data.audio_bank import audio_bank

    settings = mel_settings(cfg)
    with main_process_first():  # one process writes the cache, the others read it
        bank = audio_bank(dataset.split_dir, dataset.rows, settings.sample_rate, settings.seconds, progress=progress)
    return settings, bank


def build_joint_models(cfg, conditioner, settings):
    from gan.joint.models import JointDiscriminator, JointGenerator

    m, j, r = cfg.model, cfg.joint, cfg.data.resolution
    cond_dim = conditioner.cond_dim if conditioner is not None else 0
    token_dim = conditioner.token_dim if conditioner is not None else None  # None unless text.use_tokens
    G = JointGenerator(image_resolution=r, audio_resolution=j.n_mels, z_dim=m.z_dim, cond_dim=cond_dim,
                       base_channels=m.g_channels, audio_channels=j.audio_channels, max_channels=m.g_max_channels,
                       trunk_resolution=j.trunk_resolution, mel=settings.to_dict(), token_dim=token_dim,
                       attention_resolutions=tuple(j.attention_resolutions), cond_norm=m.cond_norm,
                       upsample=m.upsample, head_style=j.head_style, audio_source=j.audio_source)
    D = JointDiscriminator(image_resolution=r, audio_resolution=j.n_mels, cond_dim=cond_dim,
                           base_channels=m.d_channels, audio_channels=j.audio_channels,
                           max_channels=m.d_max_channels, spectral_norm=m.spectral_norm, cond_norm=m.cond_norm,
                           mbstd_group=m.mbstd_group)
    return G, D


@torch.no_grad()
def joint_preview(trainer, G) -> None:
    """samples/step-N.png (images over their spectrograms: the grid's captions, then 4 without one)
    and samples/step-N/ with the same pairs as PNG + WAV + index.html, to look and listen."""
    from gan.joint.sampling import JointSampler, preview, write_pairs

    sampler = JointSampler(G, trainer.conditioner, trainer.accelerator.device)
    prompts = [r.get("text", "") for r in trainer.grid_rows] if sampler.conditioned else []
    g = torch.Generator().manual_seed(trainer.cfg.train.seed)
    z = G.sample_noise(len(prompts) + 4, G.config.z_dim, g)
    parts = [(z[:len(prompts)], sampler.condition(prompts, 0))] if prompts else []
    parts.append((z[len(prompts):], sampler.condition(None, 4)))  # None for an unconditional model
    with trainer.accelerator.autocast():
        outs = [sampler.run(zp, cp) for zp, cp in parts]
    images, mels = (torch.cat([o[k] for o in outs]) for k in (0, 1))
    G.train()
    out = trainer.run_dir / "samples"
    out.mkdir(exist_ok=True)
    preview(images, mels).save(out / f"step-{trainer.step:07d}.png")
    waves = sampler.waveforms(mels, trainer.cfg.joint.griffin_lim_iters)
    write_pairs(images, mels, waves, sampler.mel.sample_rate, prompts + ["(no caption)"] * 4,
                out / f"step-{trainer.step:07d}")
