"""AttributeIndex: near-miss rows (exactly one attribute away) and attribute-grouped orders."""

import itertools

import pytest
import torch

from gan.data.attribute_index import AttributeIndex
from gan.errors import GanError

COLORS, SHAPES, SIZES = ["red", "green", "blue"], ["circle", "square"], ["small", "large"]


def rows(copies=3):
    out = []
    for c, s, z in itertools.product(COLORS, SHAPES, SIZES):
        for k in range(copies):
            out.append({"file_name": f"{c}_{s}_{z}_{k}.png", "attributes": {"color": c, "shape": s, "size": z}})
    return out


def differing(a: dict, b: dict) -> list[str]:
    return [k for k in a if a[k] != b[k]]


def test_near_misses_differ_in_exactly_one_attribute_and_cover_every_attribute():
    data = rows()
    index = AttributeIndex(data, "test")
    torch.manual_seed(0)
    query = torch.arange(len(data)).repeat(20)  # (720,)
    partners = index.near_misses(query)
    changed = [differing(data[i]["attributes"], data[j]["attributes"]) for i, j in zip(query.tolist(), partners.tolist())]
    assert all(len(c) == 1 for c in changed)
    counts = {name: sum(c == [name] for c in changed) for name in ("color", "shape", "size")}
    # The attribute is drawn uniformly (1/3 each, 720 draws: 3 sigma ~ 38), not by how many values it has.
    assert all(abs(n - 240) < 45 for n in counts.values()), counts
    torch.manual_seed(0)
    assert torch.equal(index.near_misses(query), partners)  # the global RNG alone decides (exact resume)


def test_grouped_order_runs_share_all_attributes_and_depend_on_the_generator_only():
    data = rows(copies=5)  # 5 rows per combination: two runs of 2, one row left out
    index = AttributeIndex(data, "test")
    order = index.grouped_order(2, torch.Generator().manual_seed(3))
    assert len(order) == 12 * 4 and len(set(order.tolist())) == len(order)
    for a, b in order.view(-1, 2).tolist():
        assert data[a]["attributes"] == data[b]["attributes"]
    again = index.grouped_order(2, torch.Generator().manual_seed(3))
    other = index.grouped_order(2, torch.Generator().manual_seed(4))
    assert torch.equal(order, again) and not torch.equal(order, other)
    with pytest.raises(GanError, match="no attribute combination has 6 rows"):
        index.grouped_order(6, torch.Generator())


def test_rows_without_attributes_are_named_in_the_error():
    data = rows()
    data[4] = {"file_name": "plain.png", "text": "a bird"}
    with pytest.raises(GanError, match=r"data.attribute_groups needs an `attributes` object in every metadata row; "
                                       r"row 4 \(plain.png\)"):
        AttributeIndex(data, "data.attribute_groups")
    data = rows()
    data[2] = {"file_name": "odd.png", "attributes": {"color": "red"}}
    with pytest.raises(GanError, match=r"the same attribute names in every row.*row 2 \(odd.png\) has \['color'\]"):
        AttributeIndex(data, "joint.near_miss_weight")
