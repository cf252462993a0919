import numpy as np
import torch

from gan.data.shapes import render, sample_attributes
from gan.metrics.diversity import diversity_ratios, shape_measurements


def rendered(n, seed, attrs=None):
    rng = np.random.default_rng(seed)
    images, params = [], []
    for _ in range(n):
        image, p = render(attrs or sample_attributes(rng), 32, rng)
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1)
        params.append(p)
    return torch.stack(images), params


def test_measurements_match_the_drawn_parameters():
    attrs = {"color": "red", "shape": "square", "size": "large", "position": "top left"}
    images, params = rendered(40, 0, attrs)
    m = shape_measurements(images)
    bg = torch.tensor([float(p["background"]) for p in params])
    cx = torch.tensor([p["center_px"][0] / 32 for p in params])
    side = torch.tensor([p["side_px"] / 32 for p in params])
    assert (m["background"] - bg).abs().max() <= 1.0
    assert (m["center_x"] - cx).abs().max() < 0.02  # within ~half a pixel
    assert (m["side"] - side).abs().max() < 0.03  # a square's area-equivalent side is its side


def test_ratio_is_one_for_the_data_and_zero_for_a_collapsed_generator():
    attrs = {"color": "blue", "shape": "circle", "size": "small", "position": "center"}
    real, _ = rendered(64, 1, attrs)
    other, _ = rendered(64, 2, attrs)
    like_data = diversity_ratios(other, real)
    assert all(0.6 < v < 1.6 for v in like_data.values()), like_data
    collapsed = diversity_ratios(other[:1].expand(64, -1, -1, -1), real)
    assert all(v < 1e-4 for v in collapsed.values()), collapsed
