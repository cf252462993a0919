"""gan.metrics.stats against closed forms, hand-computed examples and reference implementations
(NumPy/SciPy, torchmetrics, torch-fidelity) on the same feature matrices."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from gan.errors import GanError
from gan.metrics.stats import (
    check_fid_samples,
    density_coverage,
    fid_from_features,
    frechet_distance,
    gaussian_stats,
    inception_score,
    kid,
    precision_recall,
)

pytestmark = pytest.mark.filterwarnings("ignore:Metric `.*` will save all extracted features:UserWarning")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def gaussians(n, d, seed, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


class Identity(torch.nn.Module):
    """A 'feature extractor' for torchmetrics that hands back the features it is given."""

    def __init__(self, num_features):
        super().__init__()
        self.num_features = num_features  # read by FrechetInceptionDistance instead of a dummy forward

    def forward(self, x):
        return x


# ---------------------------------------------------------------------------------------------
# FID


def fd(mu1, s1, mu2, s2):
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return frechet_distance(t(mu1), t(s1), t(mu2), t(s2))


def test_frechet_distance_closed_forms():
    s = [[2.0, 1.0], [1.0, 2.0]]
    assert abs(fd([1, 2], s, [1, 2], s)) < 1e-10
    assert fd([0, 0, 0, 0], np.eye(4), [1, 2, 0, 0], np.eye(4)) == pytest.approx(5, abs=1e-10)
    # Diagonal: |dmu|^2 + sum (sqrt a - sqrt b)^2 = 4 + (1 + 1 + 4 + 0).
    assert fd([0] * 4, np.diag([1, 4, 9, 16]), [1] * 4, np.diag([4, 1, 1, 16])) == pytest.approx(10, abs=1e-10)
    # S2 = 9 S1: tr(S1) (1 + 9 - 2 * 3) = 4 * 4.
    assert fd([0, 0], s, [0, 0], 9 * np.array(s)) == pytest.approx(16, abs=1e-10)
    # tr sqrt(S1 S2) = sqrt(tr + 2 sqrt(det)) for 2x2: 25 + 4 + 5 - 2 sqrt(10 + 2 sqrt(12)).
    assert fd([0, 0], s, [3, 4], np.diag([1, 4])) == pytest.approx(25.7712204477, abs=1e-8)
    assert 34 - 2 * math.sqrt(10 + 2 * math.sqrt(12)) == pytest.approx(25.7712204477, abs=1e-8)


def test_gaussian_stats_is_mean_and_unbiased_covariance():
    x = gaussians(50, 3, 0).float()
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), x.double().numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.double().numpy(), rowvar=False), rtol=1e-12)


def scipy_fid(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def test_fid_matches_scipy_and_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance

    g = torch.Generator().manual_seed(0)
    mix = torch.randn(32, 32, generator=g, dtype=torch.float64) / 4
    real = gaussians(500, 32, 1)
    fake = gaussians(500, 32, 2, shift=0.3) @ (torch.eye(32, dtype=torch.float64) + mix)
    value = fid_from_features(real.float(), fake.float())  # float32 in, float64 inside
    expected = scipy_fid(real.float().double().numpy(), fake.float().double().numpy())
    assert value == pytest.approx(expected, rel=1e-6)
    assert value > 1  # the two Gaussians do differ

    metric = FrechetInceptionDistance(feature=Identity(32))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert fid_from_features(real, fake) == pytest.approx(metric.compute().item(), rel=1e-5)


def test_fid_bias_between_two_samples_of_one_gaussian():
    """Two independent N-sample estimates of N(0, I_d) have FID > 0 on average:

    * means: m1 - m2 ~ N(0, 2/N I), so E|m1 - m2|^2 = 2d/N exactly;
    * covariances: with S_i = I + E_i, expanding the trace of the square root to second order gives
      tr S1 + tr S2 - 2 tr (S1^1/2 S2 S1^1/2)^1/2 = |E1 - E2|_F^2 / 4 + O(E^3). (N-1) S_i is Wishart,
      Var S_jj = 2/(N-1), Var S_jk = 1/(N-1), so E|E_i|_F^2 = d(d+1)/(N-1) and the term is
      d(d+1) / (2(N-1)).

    E[FID] ~= 2d/N + d(d+1)/(2(N-1)), the issue's (2d + d(d+1)/2)/N up to N vs N-1 (1e-4 relative
    here). Checked by simulation (600 draws each): d=64, N=10000: 0.22038 +- 0.00028 vs 0.22082;
    d=64, N=1000: 2.2115 +- 0.0028 vs 2.2101, so the higher-order terms are below 0.3%.
    """
    d, n, seeds = 64, 10_000, 32
    values = [fid_from_features(gaussians(n, d, 2 * s), gaussians(n, d, 2 * s + 1)) for s in range(seeds)]
    expected = 2 * d / n + d * (d + 1) / (2 * (n - 1))  # 0.2208
    # One FID has sd ~0.0068 here (simulated), so the mean of 32 has sd ~0.0012; 0.005 is ~4 sd and
    # still rejects a missing mean term (-0.0128) or a covariance term off by 3%.
    assert np.mean(values) == pytest.approx(expected, abs=0.005)
    assert np.std(values) == pytest.approx(0.0068, rel=0.5)


def test_fid_sample_count_errors():
    with pytest.raises(GanError, match="FID needs at least 2 samples per set .* got 1 generated samples"):
        fid_from_features(gaussians(10, 4, 0), gaussians(1, 4, 1), allow_rank_deficient=True)
    with pytest.raises(GanError, match=r"covariance of 32-dim features from 20 real samples is rank-deficient: "
                                       r"at least 33 real samples are needed .*--allow-rank-deficient"):
        fid_from_features(gaussians(20, 32, 0), gaussians(100, 32, 1))
    with pytest.raises(GanError, match="from 32 reference samples is rank-deficient"):
        check_fid_samples(32, 32, who="reference")
    check_fid_samples(33, 32)
    biased = fid_from_features(gaussians(20, 32, 0), gaussians(100, 32, 1), allow_rank_deficient=True)
    assert math.isfinite(biased) and biased > 0
    with pytest.raises(GanError, match="same dimension; got 4 and 5"):
        fid_from_features(gaussians(10, 4, 0), gaussians(10, 5, 1))
    with pytest.raises(GanError, match=r"expected mu1, mu2 of shape \(D,\).*mu2 \(3,\)"):
        frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(2))
    with pytest.raises(GanError, match="gaussian_stats needs at least 2 samples"):
        gaussian_stats(torch.zeros(1, 3))


# ---------------------------------------------------------------------------------------------
# KID


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    real, other = gaussians(1000, 16, 0), gaussians(1000, 16, 1)
    same_mean, same_std = kid(real, other, subset_size=200, num_subsets=50)
    assert abs(same_mean) < same_std  # unbiased: scattered around 0
    shifted_mean, shifted_std = kid(real, other + 0.3, subset_size=200, num_subsets=50)
    assert shifted_mean > 5 * shifted_std and shifted_mean > 50 * abs(same_mean)
    small = {"subset_size": 50, "num_subsets": 3}
    assert kid(real, other, **small, seed=0) == kid(real, other, **small)  # seeded, default seed 0
    assert kid(real, other, **small, seed=1) != kid(real, other, **small)


def test_kid_linear_kernel_closed_form():
    """degree 1: the unbiased estimate is gamma (|sum x|^2 - sum |x_i|^2) / (m(m-1)) + same for y
    - 2 gamma mean(x).mean(y) + 0 (the coef0 terms cancel)."""
    x, y = gaussians(60, 5, 0), gaussians(60, 5, 1, shift=0.5)
    m, gamma = 60, 0.2

    def within(a):
        return (a.sum(0).square().sum() - a.square().sum()) / (m * (m - 1))

    expected = gamma * (within(x) + within(y) - 2 * x.mean(0) @ y.mean(0))
    mean, std = kid(x, y, subset_size=m, num_subsets=3, degree=1, gamma=gamma, coef0=2.0)
    assert mean == pytest.approx(expected.item(), rel=1e-10)
    assert std < 1e-12  # every "subset" is the whole set, just reordered


def test_kid_matches_torchmetrics_on_full_sets():
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = gaussians(300, 16, 0), gaussians(300, 16, 1, shift=0.2, scale=1.3)
    metric = KernelInceptionDistance(feature=Identity(16), subsets=2, subset_size=300)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected = metric.compute()[0].item()
    assert kid(real, fake, subset_size=300, num_subsets=2)[0] == pytest.approx(expected, rel=1e-6)
    assert expected > 0.1


def test_kid_needs_subset_size_samples_on_each_side():
    with pytest.raises(GanError, match="at least 100 real and 100 generated samples; "
                                       "got 50 real and 200 generated"):
        kid(gaussians(50, 4, 0), gaussians(200, 4, 1), subset_size=100)


# ---------------------------------------------------------------------------------------------
# Inception Score


def test_inception_score_closed_forms():
    labels = torch.arange(1000) % 10  # every contiguous split of 100 holds each class 10 times
    one_hot = torch.nn.functional.one_hot(labels, 10).double()
    mean, std = inception_score(one_hot, splits=10, from_logits=False)
    assert mean == pytest.approx(10, abs=1e-9) and std < 1e-9
    mean, std = inception_score(torch.zeros(1000, 10), splits=10)  # uniform predictions
    assert mean == pytest.approx(1, abs=1e-12) and std < 1e-12
    # Two classes, one split: p(y|x) = (0.8, 0.2) and (0.2, 0.8), p(y) = (0.5, 0.5).
    probs = torch.tensor([[0.8, 0.2], [0.2, 0.8]])
    kl = 0.8 * math.log(1.6) + 0.2 * math.log(0.4)
    assert inception_score(probs, splits=1, from_logits=False)[0] == pytest.approx(math.exp(kl), rel=1e-7)


def test_inception_score_matches_torch_fidelity_and_torchmetrics():
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torchmetrics.image.inception import InceptionScore

    logits = gaussians(1003, 20, 0, scale=3.0)  # 1003: uneven splits follow i * N // splits
    ref = isc_features_to_metric(logits, splits=10, shuffle=False)
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(ref["inception_score_mean"], rel=1e-10)
    assert std == pytest.approx(ref["inception_score_std"], rel=1e-8)

    # torchmetrics shuffles with torch.randperm and chunks with torch.chunk (same splits when N is
    # a multiple of `splits`), and reports the Bessel-corrected std: replay its permutation.
    logits = logits[:1000]
    metric = InceptionScore(feature=Identity(20), splits=10)
    metric.update(logits)
    torch.manual_seed(123)
    order = torch.randperm(1000)
    torch.manual_seed(123)
    tm_mean, tm_std = metric.compute()
    mean, std = inception_score(logits[order], splits=10)
    assert mean == pytest.approx(tm_mean.item(), rel=1e-10)
    assert std * math.sqrt(10 / 9) == pytest.approx(tm_std.item(), rel=1e-8)


def test_inception_score_errors():
    with pytest.raises(GanError, match="splits=10 needs at least 10 samples .* got 9"):
        inception_score(torch.zeros(9, 5), splits=10)
    with pytest.raises(GanError, match="from_logits=False each row must be class probabilities"):
        inception_score(torch.randn(20, 5), splits=2, from_logits=False)


# ---------------------------------------------------------------------------------------------
# Precision / recall, density / coverage


def test_nearest_neighbour_metrics_on_a_hand_computed_1d_example():
    """k = 2. Real balls reach the 2nd nearest OTHER real: 0:[-3,3] 1:[-1,3] 3:[0,6] 7:[3,11]
    8:[3,13] 30:[7,53] (counting the sample itself would give radii 1,1,2,1,1,22).
    Generated -25, -20 lie in no real ball; -2 in 1; 2.5, 5.5, 10 in 3 each; 13.5 in 1 (30's):
    precision 5/7, density (1+3+3+3+1) / (2*7) = 11/14.
    Generated balls: -25:[-48,-2] -20:[-38,-2] -2:[-9.5,5.5] 2.5:[-2,7] 5.5:[1,10] 10:[5.5,14.5]
    13.5:[5.5,21.5] hold every real but 30: recall 5/6. Each real's nearest generated sample is in
    its own ball (30's is 13.5, 16.5 <= 23): coverage 1, though recall misses it."""
    real = torch.tensor([0, 1, 3, 7, 8, 30.0])[:, None]
    fake = torch.tensor([-25, -20, -2, 2.5, 5.5, 10, 13.5])[:, None]
    pr = precision_recall(real, fake, k=2)
    dc = density_coverage(real, fake, k=2)
    assert pr["precision"] == pytest.approx(5 / 7) and pr["recall"] == pytest.approx(5 / 6)
    assert dc["density"] == pytest.approx(11 / 14) and dc["coverage"] == 1.0


def test_nearest_neighbour_metrics_on_identical_and_disjoint_sets():
    real = gaussians(200, 8, 0)
    pr, dc = precision_recall(real, real.clone()), density_coverage(real, real.clone())
    assert pr == {"precision": 1.0, "recall": 1.0} and dc["coverage"] == 1.0
    far = gaussians(200, 8, 1, shift=100.0)
    assert precision_recall(real, far) == {"precision": 0.0, "recall": 0.0}
    assert density_coverage(real, far) == {"density": 0.0, "coverage": 0.0}


def brute_force(real, fake, k):
    """Full distance matrices with the diagonal set to inf (Kynkäänniemi / Naeem formulas)."""
    x, y = real.numpy(), fake.numpy()
    d_xx = np.linalg.norm(x[:, None] - x[None], axis=-1)
    d_yy = np.linalg.norm(y[:, None] - y[None], axis=-1)
    d_xy = np.linalg.norm(x[:, None] - y[None], axis=-1)  # (N, M)
    np.fill_diagonal(d_xx, np.inf)
    np.fill_diagonal(d_yy, np.inf)
    r_x, r_y = np.sort(d_xx, 1)[:, k - 1], np.sort(d_yy, 1)[:, k - 1]
    inside = d_xy <= r_x[:, None]  # (N, M): fake j in real ball i
    return {"precision": inside.any(0).mean(), "recall": (d_xy <= r_y[None]).any(1).mean(),
            "density": inside.sum() / (k * len(y)), "coverage": (d_xy.min(1) <= r_x).mean()}


def test_nearest_neighbour_metrics_match_references_and_chunking():
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    real, fake = gaussians(300, 16, 0), gaussians(250, 16, 1, shift=0.3, scale=0.8)
    ref = brute_force(real, fake, k=3)
    pr, dc = precision_recall(real, fake, k=3), density_coverage(real, fake, k=3)
    for name, value in {**pr, **dc}.items():
        assert value == pytest.approx(ref[name], abs=1e-12), name
    assert 0.1 < pr["precision"] < 0.99 and 0.1 < dc["coverage"] < 0.99  # not a degenerate case
    tf_precision, tf_recall = calculate_precision_recall_full(fake, real, 3)  # generated set first
    assert (pr["precision"], pr["recall"]) == pytest.approx((tf_precision, tf_recall), abs=1e-6)
    assert precision_recall(real, fake, k=3, batch_size=7) == pr
    assert density_coverage(real, fake, k=3, batch_size=7) == dc


def test_nearest_neighbour_metrics_need_more_than_k_samples():
    with pytest.raises(GanError, match="k=3 needs at least 4 samples on each side .* got 3 real and 10 generated"):
        precision_recall(gaussians(3, 2, 0), gaussians(10, 2, 1), k=3)
    with pytest.raises(GanError, match="k=5 needs at least 6 samples on each side .* got 10 real and 5 generated"):
        density_coverage(gaussians(10, 2, 0), gaussians(5, 2, 1))
