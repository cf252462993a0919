"""GAN metrics computed from feature matrices: FID, KID, Inception Score, precision/recall and
density/coverage.

Everything here is a pure function of already-extracted features (rows are samples), so the same
code serves any embedding (Inception, the shapes classifier, CLIP, ...). Inputs of any float dtype
are cast to float64 first: FID subtracts traces of similar size and KID sums cubed dot products,
and float32 loses several digits in both.

Conventions follow the reference implementations so numbers are comparable with published ones:
FID as in Heusel et al. 2017 (unbiased covariances), KID as in Binkowski et al. 2018 and
torch-fidelity/torchmetrics, IS split into contiguous chunks as torch-fidelity does, precision/recall
as Kynkäänniemi et al. 2019 and density/coverage as Naeem et al. 2020. Balls are closed
(``distance <= radius``), as in torch-fidelity's precision/recall.
"""

from __future__ import annotations

import torch

from gan.errors import GanError


def _features(x, name: str) -> torch.Tensor:
    """(N, D) float64 copy of a feature matrix, or a GanError saying what was wrong with it."""
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[1] < 1:
        raise GanError(f"{name} features: expected a 2-D (N, D) matrix, one row per sample; "
                       f"got shape {tuple(x.shape)}")
    x = x.to(torch.float64)
    if not torch.isfinite(x).all():
        raise GanError(f"{name} features contain NaN or infinite values")
    return x


def _pair(real, fake) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature matrices as float64, checked to share a feature dimension."""
    x, y = _features(real, "real"), _features(fake, "generated")
    if x.shape[1] != y.shape[1]:
        raise GanError(f"real and generated features must have the same dimension; "
                       f"got {x.shape[1]} and {y.shape[1]}")
    return x, y


# ---------------------------------------------------------------------------------------------
# FID


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) -> mean (D,) and unbiased covariance (D, D), float64: the Gaussian FID fits."""
    x = _features(features, "gaussian_stats")
    n = x.shape[0]
    if n < 2:
        raise GanError(f"gaussian_stats needs at least 2 samples to estimate a covariance; got {n}")
    mu = x.mean(dim=0)  # (D,)
    centred = x - mu  # (N, D)
    sigma = centred.T @ centred / (n - 1)  # (D, D)
    return mu, sigma


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix; tiny negative eigenvalues from rounding become 0."""
    w, v = torch.linalg.eigh((a + a.T) / 2)  # (D,), (D, D)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), the Fréchet distance of two Gaussians.

    S1 S2 is not symmetric, so taking its square root directly (scipy's sqrtm) can return complex
    noise on near-singular covariances. It has the same eigenvalues as sqrt(S1) S2 sqrt(S1), which
    is symmetric PSD: eigvalsh on that is stable, and rounding negatives are clamped to 0.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))
    d = mu1.shape[0] if mu1.dim() == 1 else -1
    if d < 1 or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise GanError(f"frechet_distance: expected mu1, mu2 of shape (D,) and sigma1, sigma2 of shape (D, D) "
                       f"with one D; got mu1 {tuple(mu1.shape)}, sigma1 {tuple(sigma1.shape)}, "
                       f"mu2 {tuple(mu2.shape)}, sigma2 {tuple(sigma2.shape)}")
    if not all(torch.isfinite(t).all() for t in (mu1, mu2, sigma1, sigma2)):
        raise GanError("frechet_distance: the means or covariances contain NaN or infinite values")
    root1 = _sqrt_psd(sigma1)  # (D, D)
    middle = root1 @ sigma2 @ root1  # (D, D), symmetric PSD up to rounding
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fid = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * tr_covmean
    return max(fid.item(), 0.0)  # a squared distance; only rounding can push it below 0


def check_fid_samples(n: int, dim: int, *, allow_rank_deficient: bool = False, who: str = "") -> None:
    """Refuse sample counts that make FID meaningless.

    With n <= dim the covariance has rank at most n - 1 < dim, so FID is dominated by the missing
    directions and changes with n rather than with the model. It can still be computed (it is
    just biased), which is what allow_rank_deficient is for.
    """
    samples = f"{who} samples" if who else "samples"
    if n < 2:
        raise GanError(f"FID needs at least 2 samples per set to estimate a covariance; got {n} {samples}")
    if n <= dim and not allow_rank_deficient:
        raise GanError(f"the covariance of {dim}-dim features from {n} {samples} is rank-deficient: at least "
                       f"{dim + 1} {samples} are needed (or pass allow_rank_deficient=True / "
                       f"--allow-rank-deficient to compute it anyway; the value is then biased)")


def fid_from_features(real: torch.Tensor, fake: torch.Tensor, *, allow_rank_deficient: bool = False) -> float:
    """FID between two feature matrices (N, D) and (M, D)."""
    x, y = _pair(real, fake)
    check_fid_samples(x.shape[0], x.shape[1], allow_rank_deficient=allow_rank_deficient, who="real")
    check_fid_samples(y.shape[0], y.shape[1], allow_rank_deficient=allow_rank_deficient, who="generated")
    return frechet_distance(*gaussian_stats(x), *gaussian_stats(y))


# ---------------------------------------------------------------------------------------------
# KID


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef0: float) -> torch.Tensor:
    """Unbiased MMD^2 of two equal-size sets under k(a, b) = (gamma a.b + coef0)^degree.

    The within-set sums drop the diagonal (k(x_i, x_i) is not an independent pair); the
    cross term keeps all m^2 pairs, as in Binkowski et al.'s reference code.
    """
    m = x.shape[0]
    k_xx = (gamma * x @ x.T + coef0) ** degree  # (m, m)
    k_yy = (gamma * y @ y.T + coef0) ** degree  # (m, m)
    k_xy = (gamma * x @ y.T + coef0) ** degree  # (m, m)
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_xy.sum() / (m * m)


def kid(real, fake, *, subset_size: int = 1000, num_subsets: int = 100, degree: int = 3,
        gamma: float | None = None, coef0: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and (population) std of unbiased MMD^2 over random subsets.

    Each subset takes subset_size rows from each side without replacement; subsets are averaged
    because the kernel matrices grow with the square of the set size. The estimator is unbiased,
    so two samples of one distribution give values scattered around 0, negative ones included.
    """
    x, y = _pair(real, fake)
    if subset_size < 2:
        raise GanError(f"KID subset_size must be at least 2 (the unbiased estimate needs pairs); "
                       f"got {subset_size}")
    if num_subsets < 1 or degree < 1:
        raise GanError(f"KID needs num_subsets >= 1 and degree >= 1; got {num_subsets} and {degree}")
    n_real, n_fake = x.shape[0], y.shape[0]
    if n_real < subset_size or n_fake < subset_size:
        raise GanError(f"KID draws subsets of {subset_size} samples without replacement from each side, so it "
                       f"needs at least {subset_size} real and {subset_size} generated samples; got {n_real} real "
                       f"and {n_fake} generated (pass a smaller subset_size or more samples)")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(num_subsets):
        xs = x[torch.randperm(n_real, generator=generator)[:subset_size].to(x.device)]  # (m, D)
        ys = y[torch.randperm(n_fake, generator=generator)[:subset_size].to(y.device)]  # (m, D)
        scores.append(_mmd2_unbiased(xs, ys, degree, gamma, coef0))
    scores = torch.stack(scores)  # (num_subsets,)
    return scores.mean().item(), scores.std(correction=0).item()


# ---------------------------------------------------------------------------------------------
# Inception Score


def inception_score(logits_or_probs: torch.Tensor, *, splits: int = 10,
                    from_logits: bool = True) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) on each of `splits` contiguous chunks; mean and population std.

    p(y) is the chunk's average prediction. Chunk boundaries are i * N // splits, as in
    torch-fidelity; no shuffling here, so shuffle beforehand if the rows are ordered by class.
    """
    z = _features(logits_or_probs, "inception_score")  # (N, C)
    n = z.shape[0]
    if splits < 1 or n < splits:
        raise GanError(f"inception_score with splits={splits} needs at least {max(splits, 1)} samples "
                       f"(one per split); got {n}")
    if from_logits:
        log_p = z.log_softmax(dim=1)  # (N, C)
        p = log_p.exp()
    else:
        if (z < 0).any() or not torch.allclose(z.sum(dim=1), z.new_ones(n), atol=1e-3):
            raise GanError("inception_score: with from_logits=False each row must be class probabilities "
                           "(non-negative, summing to 1); pass from_logits=True for logits")
        p, log_p = z, z.log()  # log 0 = -inf, masked below
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        p_chunk, log_p_chunk = p[lo:hi], log_p[lo:hi]  # (n_i, C)
        log_q = p_chunk.mean(dim=0, keepdim=True).log()  # (1, C); > -inf wherever p_chunk > 0
        terms = torch.where(p_chunk > 0, p_chunk * (log_p_chunk - log_q), torch.zeros_like(p_chunk))
        scores.append(terms.sum(dim=1).mean().exp())
    scores = torch.stack(scores)  # (splits,)
    return scores.mean().item(), scores.std(correction=0).item()


# ---------------------------------------------------------------------------------------------
# Nearest-neighbour metrics


def _kth_neighbour_radii(x: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """(N, D) -> (N,) distance from each row to its k-th nearest OTHER row.

    The self-distance is masked with inf rather than skipped by rank, so a duplicate sample
    counts as a neighbour at distance 0 and rounding in cdist cannot reorder self and others.
    """
    radii = []
    for start in range(0, x.shape[0], batch_size):
        d = torch.cdist(x[start:start + batch_size], x)  # (B, N)
        rows = torch.arange(d.shape[0], device=d.device)
        d[rows, rows + start] = float("inf")
        radii.append(d.kthvalue(k, dim=1).values)
    return torch.cat(radii)


def _ball_membership(x: torch.Tensor, y: torch.Tensor, r_x: torch.Tensor, r_y: torch.Tensor | None,
                     batch_size: int) -> dict[str, torch.Tensor]:
    """One chunked pass over real (x) vs generated (y) distances, rows of x at a time.

    Returns per generated sample the number of real balls B(x_i, r_x_i) holding it; per real
    sample whether its nearest generated sample is inside its own ball; and, when generated
    radii r_y are given, whether the real sample lies in any generated ball.
    """
    counts = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)  # (M,)
    covered, recalled = [], []
    for start in range(0, x.shape[0], batch_size):
        d = torch.cdist(x[start:start + batch_size], y)  # (B, M)
        r = r_x[start:start + batch_size, None]  # (B, 1)
        counts += (d <= r).sum(dim=0)
        covered.append(d.min(dim=1).values <= r[:, 0])
        if r_y is not None:
            recalled.append((d <= r_y[None, :]).any(dim=1))
    out = {"counts": counts, "covered": torch.cat(covered)}
    if r_y is not None:
        out["recalled"] = torch.cat(recalled)
    return out


def _check_neighbours(x: torch.Tensor, y: torch.Tensor, k: int, batch_size: int, what: str) -> None:
    if k < 1 or batch_size < 1:
        raise GanError(f"{what}: k and batch_size must be at least 1; got k={k}, batch_size={batch_size}")
    if x.shape[0] <= k or y.shape[0] <= k:
        raise GanError(f"{what} with k={k} needs at least {k + 1} samples on each side (a k-th nearest other "
                       f"sample must exist); got {x.shape[0]} real and {y.shape[0]} generated")


def precision_recall(real, fake, *, k: int = 3, batch_size: int = 1024) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each sample's ball reaches its k-th nearest other sample of the same set. Precision is the
    share of generated samples inside at least one real ball (fidelity); recall the share of real
    samples inside at least one generated ball (coverage of the data). Distances are computed
    batch_size rows at a time, so memory is O(batch_size * max(N, M)) rather than O(N * M).
    """
    x, y = _pair(real, fake)
    _check_neighbours(x, y, k, batch_size, "precision_recall")
    r_x, r_y = _kth_neighbour_radii(x, k, batch_size), _kth_neighbour_radii(y, k, batch_size)
    m = _ball_membership(x, y, r_x, r_y, batch_size)
    return {"precision": (m["counts"] > 0).double().mean().item(),
            "recall": m["recalled"].double().mean().item()}


def density_coverage(real, fake, *, k: int = 5, batch_size: int = 1024) -> dict:
    """Density and coverage (Naeem et al. 2020), which only use balls around real samples.

    density = (1 / (k M)) sum_j #{i: y_j in B(x_i, r_i)}: about 1 when the generated samples
    are spread like the data, above 1 when they crowd dense regions. coverage = share of real
    samples whose nearest generated sample is inside their ball; an outlier in the generated
    set cannot inflate it, unlike recall.
    """
    x, y = _pair(real, fake)
    _check_neighbours(x, y, k, batch_size, "density_coverage")
    r_x = _kth_neighbour_radii(x, k, batch_size)
    m = _ball_membership(x, y, r_x, None, batch_size)
    return {"density": m["counts"].sum().item() / (k * y.shape[0]),
            "coverage": m["covered"].double().mean().item()}
