"""Rows grouped by their `attributes` (on the built-in data: colour, shape, size, position).

Two training tricks need to know which rows describe the same thing and which differ in one
attribute only:

- near-miss pairs (joint task): a real picture with the real sound of a row that differs in
  exactly ONE attribute. Random re-pairing almost always differs in several attributes, so D's
  joint head can tell them apart by the easiest one (position/rhythm) and never learns the others;
  a near miss leaves it no such shortcut.
- attribute groups (text-to-image): batches made of runs of rows that share all attributes, so a
  minibatch-statistics layer in D compares images that SHOULD differ only by the data's jitter and
  can see when a generator draws one prompt the same way every time.

Both draw from torch generators/the global RNG only, so data order and pairs are reproducible
and resume exactly.
"""

from __future__ import annotations

import torch

from gan.errors import GanError


class AttributeIndex:
    """rows: metadata rows (dicts); each needs an `attributes` dict with the same names.
    `what` names the option that needs it, for the error message."""

    def __init__(self, rows: list[dict], what: str):
        names = None
        keys: list[tuple] = []
        for i, row in enumerate(rows):
            attrs = row.get("attributes")
            if not isinstance(attrs, dict) or not attrs:
                raise GanError(f"{what} needs an `attributes` object in every metadata row; row {i} "
                               f"({row.get('file_name', '?')}) has {attrs!r}")
            if names is None:
                names = sorted(attrs)
            elif sorted(attrs) != names:
                raise GanError(f"{what} needs the same attribute names in every row: row 0 has {names}, "
                               f"row {i} ({row.get('file_name', '?')}) has {sorted(attrs)}")
            keys.append(tuple(str(attrs[n]) for n in names))
        if not keys:
            raise GanError(f"{what}: the dataset has no rows")
        self.names: list[str] = names
        self.keys = sorted(set(keys))
        key_id = {k: n for n, k in enumerate(self.keys)}
        self.row_key = torch.tensor([key_id[k] for k in keys])  # (N,) which combination each row is
        self.members = [torch.nonzero(self.row_key == n).flatten() for n in range(len(self.keys))]
        # neighbours[k][a]: combinations that differ from k in attribute a only (and exist in the data)
        self.neighbours: list[list[list[int]]] = []
        for k in self.keys:
            per_attr = []
            for a in range(len(names)):
                per_attr.append([key_id[o] for o in self.keys
                                 if o[a] != k[a] and all(o[b] == k[b] for b in range(len(names)) if b != a)])
            self.neighbours.append(per_attr)

    def near_misses(self, index: torch.Tensor) -> torch.Tensor:
        """(B,) row indices -> (B,) rows differing from each in exactly one attribute: the attribute
        uniformly among those that have another value in the data, then a combination, then a row.
        Draws from the global RNG (saved in checkpoints). A row with no such neighbour keeps a
        random row of the data (no near miss exists)."""
        out = []
        for i in index.tolist():
            options = [n for n in self.neighbours[int(self.row_key[i])] if n]
            if not options:
                out.append(int(torch.randint(len(self.row_key), ()).item()))
                continue
            choice = options[int(torch.randint(len(options), ()).item())]
            members = self.members[choice[int(torch.randint(len(choice), ()).item())]]
            out.append(int(members[int(torch.randint(len(members), ()).item())].item()))
        return torch.tensor(out, dtype=torch.long)

    def grouped_order(self, group: int, generator: torch.Generator) -> torch.Tensor:
        """A permutation of (most) rows in runs of `group` rows sharing all attributes: each
        combination's rows shuffled and cut into runs (a remainder shorter than `group` is left
        out of this order), then the runs shuffled."""
        runs = []
        for members in self.members:
            shuffled = members[torch.randperm(len(members), generator=generator)]
            usable = len(shuffled) - len(shuffled) % group
            runs.extend(shuffled[:usable].view(-1, group))
        if not runs:
            raise GanError(f"no attribute combination has {group} rows; lower the group size")
        runs = torch.stack(runs)  # (R, group)
        return runs[torch.randperm(len(runs), generator=generator)].flatten()
