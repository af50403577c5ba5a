"""The colour-pairings dataset (Finn et al. 2025, Sec. 3), generalised.

An image is a grid of `q x q` quadrants of 2x2 pixels. Each image draws one pattern type (a set
of key->value colour pairings); each quadrant draws one pairing of that type and shows it as the
key colour in one column (or row) and the value colour in the other. The paper's configuration
(4 colours, 3 pattern types of 2 pairings, 2x2 quadrants) has 3 * 2**4 = 48 distinct images.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from itertools import product

import torch

from mosaicdiff.config import DataConfig, Layout, Pairing
from mosaicdiff.data.base import ImageDataset
from mosaicdiff.errors import check

# Corners of the RGB cube, in [-1, 1].
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
    "cyan": (-1.0, 1.0, 1.0),
    "magenta": (1.0, -1.0, 1.0),
    "white": (1.0, 1.0, 1.0),
    "black": (-1.0, -1.0, -1.0),
}


def validate_spec(colours: tuple[str, ...], pattern_types: tuple[tuple[Pairing, ...], ...]) -> None:
    """Raise `UserError` unless the colours and pattern types define a well-posed dataset."""
    for c in colours:
        check(c in PALETTE, f"data.colours: {c!r} is not one of {list(PALETTE)}")
    check(len(set(colours)) == len(colours), f"data.colours={list(colours)} repeats a colour")
    check(len(colours) >= 2, "data.colours needs at least two colours")
    check(len(pattern_types) >= 1, "data.pattern_types needs at least one pattern type")
    seen = set()
    for i, ptype in enumerate(pattern_types):
        check(len(ptype) >= 1, f"data.pattern_types[{i}] has no pairings")
        used = [c for pairing in ptype for c in pairing]
        for c in used:
            check(c in colours, f"data.pattern_types[{i}] uses {c!r}, not in data.colours")
        check(
            len(set(used)) == len(used),
            f"data.pattern_types[{i}]={[list(p) for p in ptype]} reuses a colour; "
            "each colour may appear once per pattern type",
        )
        key = frozenset(ptype)
        check(key not in seen, f"data.pattern_types[{i}] repeats an earlier pattern type")
        seen.add(key)


@dataclass(frozen=True)
class PairingsSpec:
    """The rules of a pairings dataset; `pairings` lists every pairing of every type once."""

    colours: tuple[str, ...]
    pattern_types: tuple[tuple[Pairing, ...], ...]
    quadrants_per_side: int = 2
    layout: Layout = "columns"

    def __post_init__(self):
        valid = typing.get_args(Layout)
        check(self.layout in valid, f"layout {self.layout!r} is not one of {list(valid)}")

    @classmethod
    def from_config(cls, cfg: DataConfig) -> PairingsSpec:
        return cls(cfg.colours, cfg.pattern_types, cfg.quadrants_per_side, cfg.layout)

    @property
    def pairings(self) -> tuple[Pairing, ...]:
        return tuple(dict.fromkeys(p for ptype in self.pattern_types for p in ptype))

    @property
    def n_quadrants(self) -> int:
        return self.quadrants_per_side**2

    @property
    def side(self) -> int:
        return 2 * self.quadrants_per_side

    def rgb(self) -> torch.Tensor:
        """(K, 3) colours of `self.colours`, in [-1, 1]."""
        return torch.tensor([PALETTE[c] for c in self.colours])

    def render(self, pairing_index: torch.Tensor) -> torch.Tensor:
        """Images from the pairing (index into `self.pairings`) of every quadrant.

        Args:
            pairing_index: (N, Q) int64, quadrants in row-major order.

        Returns:
            (N, 3, 2q, 2q) float32 images in [-1, 1].
        """
        idx = {c: i for i, c in enumerate(self.colours)}
        kv = torch.tensor([[idx[k], idx[v]] for k, v in self.pairings])  # (P, 2)
        key, value = kv[pairing_index].unbind(-1)  # (N, Q) colour indices
        n, q = pairing_index.shape[0], self.quadrants_per_side
        # One quadrant's 2x2 colour indices: columns layout [[k, v], [k, v]], rows [[k, k], [v, v]].
        block = torch.stack([key, value], -1)  # (N, Q, 2)
        if self.layout == "columns":
            block = block[..., None, :].expand(n, q * q, 2, 2)  # rows repeat (k, v)
        else:
            block = block[..., :, None].expand(n, q * q, 2, 2)  # columns repeat (k, v)
        labels = block.reshape(n, q, q, 2, 2).permute(0, 1, 3, 2, 4).reshape(n, 2 * q, 2 * q)
        return self.rgb()[labels].permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)

    def quadrants(self, labels: torch.Tensor) -> torch.Tensor:
        """Per-pixel values (N, 2q, 2q), such as colour labels, cut into their quadrants:
        (N, Q, 2, 2), quadrants in row-major order (what `render` lays out, undone)."""
        n, q = labels.shape[0], self.quadrants_per_side
        return labels.reshape(n, q, 2, q, 2).permute(0, 1, 3, 2, 4).reshape(n, q * q, 2, 2)

    def type_members(self) -> list[list[int]]:
        """For every pattern type, the indices of its pairings in `self.pairings`."""
        where = {p: i for i, p in enumerate(self.pairings)}
        return [[where[p] for p in ptype] for ptype in self.pattern_types]

    def all_images(self) -> torch.Tensor:
        """Every distinct image the rules allow, (M, 3, H, W)."""
        rows = set()
        for members in self.type_members():
            rows.update(product(members, repeat=self.n_quadrants))
        return self.render(torch.tensor(sorted(rows)))


def sample_pairings(spec: PairingsSpec, n: int, generator: torch.Generator) -> tuple:
    """Draw `n` images' pattern types (N,) and quadrant pairings (N, Q) by the dataset's rules."""
    members = torch.tensor(_pad(spec.type_members()))  # (n_types, max_pairings)
    sizes = torch.tensor([len(m) for m in spec.type_members()])
    ptype = torch.randint(len(spec.pattern_types), (n,), generator=generator)
    u = torch.rand(n, spec.n_quadrants, generator=generator)
    choice = (u * sizes[ptype, None]).long()  # uniform over the type's pairings
    return ptype, members[ptype[:, None], choice]


def make_dataset(spec: PairingsSpec, n_images: int, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    ptype, pairing = sample_pairings(spec, n_images, g)
    return ImageDataset(
        "pairings",
        spec.render(pairing),
        {"spec": spec, "pattern_type": ptype, "pairing": pairing},
    )


def _pad(rows: list[list[int]]) -> list[list[int]]:
    width = max(len(r) for r in rows)
    return [r + [r[0]] * (width - len(r)) for r in rows]
