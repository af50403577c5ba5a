"""Creativity metrics: memorization, novelty, diversity and patch mosaics (SPEC Sec. 3).

Finn et al. (2025) and Kamb & Ganguli (2024) describe a creative sample as a *mosaic*: every
local patch is copied from some training image, at some location, yet the whole image copies
none. These metrics measure each part of that claim on samples of any size:

- nearest training image (distance and index), chunked over the training set;
- memorization: nearest < 1/3 of the second nearest (the relative rule of Yoon et al. 2023 and
  Gu et al. 2023, after Carlini et al. 2023), or nearest <= `copy_atol` (an exact copy). The
  training images are taken once each: in a set holding duplicates (the colour pairings' 2,048
  images are 48 distinct ones) the second nearest would be the nearest again, and the 1/3 rule
  could never fire;
- novelty: the mean nearest-training distance;
- diversity: the mean distance between samples, and the share of near-duplicate sample pairs;
- patch mosaic: each k x k patch of a sample against every k x k training patch at any location.
  `patch_distance` is the mean over a sample's patches of the distance to the nearest training
  patch; `cover_distance` the mean over pixels of the best such patch covering the pixel, so a
  pixel counts as explained when any patch containing it occurs in the training set (patches
  straddling the seam between two copied pieces do not count against it). The mosaic ratio is
  cover distance / nearest whole-image distance: near 0 means "a mosaic of training patches that
  is no copy of any image". A *mosaic* is a sample not memorized whose ratio is below 1/3 and
  whose cover distance is at most `MOSAIC_ATOL`. The ratio alone does not tell a mosaic from
  noise: among the 1,797 digits' 3x3 patches some patch lies near any 3x3 of noise (uniform
  noise in [-1, 1] has cover distance 0.22 and ratio 0.25), while a digit held out of training
  has cover distance 0.03 and ELS's samples 0.05 (median).

Samples with a NaN or infinite value (a sampler that diverged) have no distance to anything:
they are left out of every metric and counted as `n_not_finite`.

Every distance is a per-pixel RMS, ||a - b||_2 / sqrt(D) over D = C H W (or C k k) values, in
the data's units (images in [-1, 1]), so patch and image distances compare directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mosaicdiff.errors import check

# Rows of queries and keys per block: a block holds CHUNK^2 floats (4 MiB). 20,000 x 20,000
# neighbours took 0.77 s at 1,024, 0.82 s at 512 and 0.98 s at 2,048 (16 MiB blocks).
CHUNK = 1024
# A mosaic's pixels lie, on average, within this RMS of a training patch that covers them (5 %
# of the [-1, 1] range; the same bound as two samples counted near-duplicates).
MOSAIC_ATOL = 0.1


def nearest(
    queries: torch.Tensor, keys: torch.Tensor, k: int = 2, chunk: int = CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` nearest keys of every query, by per-value RMS distance.

    Candidates are ranked by |key|^2 - 2 q.key in float32, block by block (`chunk` queries by
    `chunk` keys, so memory stays bounded); the k winners are then measured exactly in float64.

    Args:
        queries: (n, D).
        keys: (m, D).
        k: neighbours wanted; missing ones (m < k) get distance inf and index -1.
        chunk: block size over both queries and keys.

    Returns:
        distances (n, k) float64, ascending, and indices (n, k) int64 into `keys`.
    """
    dims = queries.shape[1]
    keys32 = keys.float()
    key_sq = keys32.square().sum(1)  # (m,)
    out_d, out_i = [], []
    for qs in range(0, len(queries), chunk):
        q = queries[qs : qs + chunk].float()  # (b, D)
        best_d = q.new_full((len(q), k), math.inf)
        best_i = torch.full((len(q), k), -1, dtype=torch.long)
        for ks in range(0, len(keys), chunk):
            # |key|^2 - 2 q.key: the squared distance less |q|^2, which leaves the ranking alone.
            score = torch.addmm(key_sq[ks : ks + chunk], q, keys32[ks : ks + chunk].T, alpha=-2)
            val, pos = score.topk(min(k, score.shape[1]), dim=1, largest=False)  # (b, <= k)
            cand_d, cand_i = torch.cat([best_d, val], 1), torch.cat([best_i, pos + ks], 1)
            best_d, pos = cand_d.topk(k, dim=1, largest=False)
            best_i = cand_i.gather(1, pos)
        found = best_i >= 0
        diff = queries[qs : qs + chunk, None].double() - keys[best_i.clamp(min=0)].double()
        exact = diff.square().sum(-1).div(dims).sqrt().masked_fill(~found, math.inf)  # (b, k)
        exact, order = exact.sort(1)
        out_d.append(exact)
        out_i.append(best_i.gather(1, order))
    return torch.cat(out_d), torch.cat(out_i)


def pairwise_stats(
    samples: torch.Tensor, duplicate_atol: float, chunk: int = CHUNK
) -> tuple[float | None, float | None]:
    """Mean RMS distance over sample pairs i < j and the share of pairs within `duplicate_atol`.

    Args:
        samples: (n, D); both results are None when n < 2.
    """
    n, dims = samples.shape
    if n < 2:
        return None, None
    x = samples.double()
    sq = x.square().sum(1)
    total, close = 0.0, 0
    for i in range(0, n, chunk):
        for j in range(i, n, chunk):
            d2 = (
                sq[i : i + chunk, None]
                + sq[None, j : j + chunk]
                - 2 * x[i : i + chunk] @ x[j : j + chunk].T
            )
            d = d2.clamp(min=0).div(dims).sqrt()  # (b, c)
            if i == j:
                d = d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)]
            total += float(d.sum())
            close += int((d <= duplicate_atol).sum())
    pairs = n * (n - 1) // 2
    return total / pairs, close / pairs


def patch_distance_map(
    samples: torch.Tensor, train: torch.Tensor, patch: int, chunk: int = CHUNK
) -> torch.Tensor:
    """RMS distance of every `patch` x `patch` sample patch to the nearest training patch at any
    location: samples (n, C, H, W), train (m, C, H, W) -> (n, H - patch + 1, W - patch + 1)."""
    n, c, h, w = samples.shape
    keys = F.unfold(train.float(), patch).transpose(1, 2).reshape(-1, c * patch * patch)
    keys = torch.unique(keys, dim=0)  # (m', C k k): repeated patches (flat background) once
    queries = F.unfold(samples.float(), patch).transpose(1, 2).reshape(-1, c * patch * patch)
    d, _ = nearest(queries, keys, k=1, chunk=chunk)
    return d[:, 0].reshape(n, h - patch + 1, w - patch + 1)


def cover_map(patch_map: torch.Tensor, patch: int) -> torch.Tensor:
    """Per pixel, the smallest patch distance among the patches containing it:
    (n, H - patch + 1, W - patch + 1) -> (n, H, W)."""
    padded = F.pad(patch_map[:, None], (patch - 1,) * 4, value=math.inf)
    return -F.max_pool2d(-padded, patch, stride=1)[:, 0]


@dataclass
class CreativityScores:
    """Per-sample scores, each (n,): nearest and second-nearest training distance, the nearest
    image's index, `memorized` and `copy` flags, mean patch distance, cover distance and the
    mosaic ratio cover / nearest (NaN for copies, where there is nothing left to explain); and
    how many distinct training images they were measured against."""

    nearest: torch.Tensor
    second: torch.Tensor
    nearest_index: torch.Tensor
    memorized: torch.Tensor
    copy: torch.Tensor
    patch_distance: torch.Tensor
    cover_distance: torch.Tensor
    mosaic_ratio: torch.Tensor
    n_train_distinct: int


def _distinct(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of (m, D) `rows`, and for each the index of its first occurrence."""
    distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.full((len(distinct),), len(rows), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(rows)), reduce="amin")
    return distinct, first


def creativity_scores(
    samples: torch.Tensor,
    train: torch.Tensor,
    patch: int = 3,
    memorization_ratio: float = 1 / 3,
    copy_atol: float = 0.02,
    chunk: int = CHUNK,
) -> CreativityScores:
    """Score every sample against the training set.

    Args:
        samples: (n, C, H, W) generated images.
        train: (m, C, H, W) training images, same C, H, W.
        patch: side k of the patches of the mosaic score, at most min(H, W).
        memorization_ratio: memorized when nearest < ratio * second nearest (or a copy).
        copy_atol: a copy when the nearest RMS distance is at most this.
        chunk: block size of the distance computations.
    """
    check(
        samples.shape[1:] == train.shape[1:],
        f"samples {tuple(samples.shape[1:])} and "
        f"training images {tuple(train.shape[1:])} differ in shape",
    )
    check(len(samples) >= 1 and len(train) >= 1, "need at least one sample and training image")
    side = min(train.shape[-2:])
    check(1 <= patch <= side, f"patch={patch} must be between 1 and {side}, the image side")
    distinct, first = _distinct(train.flatten(1))
    d, idx = nearest(samples.flatten(1), distinct, k=2, chunk=chunk)
    idx = first[idx.clamp(min=0)].masked_fill(idx < 0, -1)  # indices into `train`
    copy = d[:, 0] <= copy_atol
    # With one training image there is no second nearest and only the copy rule applies.
    memorized = copy | (d[:, 1].isfinite() & (d[:, 0] < memorization_ratio * d[:, 1]))
    pmap = patch_distance_map(samples, train, patch, chunk)
    cover = cover_map(pmap, patch).flatten(1).mean(1)
    ratio = (cover / d[:, 0]).masked_fill(copy, math.nan)
    patch_distance = pmap.flatten(1).mean(1)
    return CreativityScores(
        d[:, 0], d[:, 1], idx[:, 0], memorized, copy, patch_distance, cover, ratio, len(distinct)
    )


def evaluate_creativity(
    samples: torch.Tensor,
    train_images: torch.Tensor,
    patch: int = 3,
    memorization_ratio: float = 1 / 3,
    copy_atol: float = 0.02,
    duplicate_atol: float = 0.1,
    mosaic_threshold: float = 1 / 3,
    mosaic_atol: float = MOSAIC_ATOL,
    chunk: int = CHUNK,
) -> dict[str, float | int | None]:
    """Every creativity metric of a sample set as JSON-able numbers (None where undefined).

    Args:
        samples: (n, C, H, W) generated images.
        train_images: (m, C, H, W) the training set.
        patch: patch side of the mosaic score.
        memorization_ratio, copy_atol: the memorization rule (see `creativity_scores`).
        duplicate_atol: two samples within this RMS distance are a near-duplicate pair.
        mosaic_threshold, mosaic_atol: a *mosaic* is a sample not memorized whose mosaic ratio
            is below `mosaic_threshold` and whose cover distance is at most `mosaic_atol`.
        chunk: block size of the distance computations.
    """
    finite = torch.isfinite(samples).flatten(1).all(1)  # (n,)
    check(
        bool(finite.any()),
        f"all {len(samples)} samples are NaN or infinite: the sampler diverged, and there is "
        "nothing to measure",
    )
    n_not_finite, samples = int((~finite).sum()), samples[finite]
    s = creativity_scores(samples, train_images, patch, memorization_ratio, copy_atol, chunk)
    diversity, duplicates = pairwise_stats(samples.flatten(1), duplicate_atol, chunk)
    ratios = s.mosaic_ratio[~s.copy]
    mosaic = ~s.memorized & (s.mosaic_ratio < mosaic_threshold)  # NaN compares False
    mosaic &= s.cover_distance <= mosaic_atol
    return {
        "n_samples": len(samples),
        "n_not_finite": n_not_finite,
        "n_train": len(train_images),
        "n_train_distinct": s.n_train_distinct,
        "novelty": float(s.nearest.mean()),
        "nearest_distance_median": float(s.nearest.median()),
        "memorization_rate": float(s.memorized.double().mean()),
        "copy_rate": float(s.copy.double().mean()),
        "diversity": diversity,
        "duplicate_pair_rate": duplicates,
        "patch_distance": float(s.patch_distance.mean()),
        "cover_distance": float(s.cover_distance.mean()),
        "mosaic_ratio": float(ratios.mean()) if len(ratios) else None,
        "mosaic_rate": float(mosaic.double().mean()),
        "patch": patch,
        "memorization_ratio": memorization_ratio,
        "copy_atol": copy_atol,
        "duplicate_atol": duplicate_atol,
        "mosaic_threshold": mosaic_threshold,
        "mosaic_atol": mosaic_atol,
    }
