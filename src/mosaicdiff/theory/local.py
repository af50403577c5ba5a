"""Local score machines: LS, ELS and boundary-broken ELS (Kamb & Ganguli 2024, Secs. 3-4).

Each cell of x_t (a pixel, or an s x s block on a stride-s grid; see `patches.py`) gets its
clean value from the k x k noisy patch around it alone (locality), as the posterior mean under a
Gaussian mixture whose components are clean training patches P:

    x0_hat(cell l) = sum_{P} softmax_P( -|x_t[Omega_l] - a P|^2 / (2 b^2) ) P[centre block]

(K&G Eqs. 10-12 for LS and ELS; a = sqrt(alpha_bar_t), b^2 = 1 - alpha_bar_t). The machines
differ only in which patches P a cell may use:

- `LocalScore` (LS, locality only): patches of every training image at the same cell l.
- `ELS` (locality + equivariance), boundary "circular": patches at every cell of every training
  image; with boundary "zeros" (boundary-broken ELS, `BoundaryBrokenELS`): patches at every
  cell of the same boundary class (interior with interior, an edge with crops at the same
  offset from that edge, a corner with the same corner).

With stride s > 1 the equivariance is over shifts by multiples of s, and each s x s block's
posterior mean is estimated jointly from its patch: for the paper's stride-2 CNN on the colour
pairings (k = s = 2) every quadrant is estimated from itself alone, so the quadrants of a sample
are independent. Identical training patches are merged with a multiplicity (exact).

Limits (tested): LS with a window covering the image is the ideal score; circular ELS with a
window covering the image is the ideal score of the training set augmented by all circular
shifts (equivariance adds the translates).
"""

from __future__ import annotations

import torch

from mosaicdiff.theory.base import ScoreMachine
from mosaicdiff.theory.mixture import gaussian_posterior
from mosaicdiff.theory.patches import Boundary, PatchGrid, unique_patches
from mosaicdiff.theory.schedule import PatchSchedule, PatchSpec


class LocalMachine(ScoreMachine):
    """Shared set-up of the local machines.

    Args:
        images: (N, C, H, W) training images.
        schedule: the diffusion schedule.
        patch_size: k, as an int, a table of T ints or a callable t -> k (`PatchSchedule`).
        stride: s; cells are s x s blocks (s = 1: pixels). k - s must be even.
        boundary: "circular" or "zeros" padding of the windows.
        **kwargs: `dtype`, `budget` (see `ScoreMachine`).
    """

    def __init__(
        self,
        images: torch.Tensor,
        schedule,
        patch_size: PatchSpec = 3,
        *,
        stride: int = 1,
        boundary: Boundary = "circular",
        **kwargs,
    ):
        super().__init__(images, schedule, **kwargs)
        self.patch_schedule = (
            patch_size
            if isinstance(patch_size, PatchSchedule)
            else PatchSchedule(patch_size, schedule.T)
        )
        self.stride, self.boundary = stride, boundary
        self._grids: dict[int, PatchGrid] = {}
        self._data: dict[int, object] = {}
        for k in sorted(set(self.patch_schedule.sizes())):
            self.grid(k)  # validate every size up front

    def grid(self, k: int) -> PatchGrid:
        if k not in self._grids:
            self._grids[k] = PatchGrid(self.shape, k, self.stride, self.boundary)
        return self._grids[k]

    def x0_hat(self, x_t: torch.Tensor, t: int, a: float, b2: float) -> torch.Tensor:
        grid = self.grid(self.patch_schedule(t))
        q = grid.unfold(x_t)  # (B, L, C k^2)
        _, blocks = self.patch_posterior(q, grid, a, b2, full=False)
        return grid.fold_blocks(blocks)

    def patch_posterior(
        self, q: torch.Tensor, grid: PatchGrid, a: float, b2: float, full: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixture over the training patches each cell may use.

        Args:
            q: (B, L, C k^2) noisy patches of x_t.
            full: average whole patches (C k^2 values) instead of the centre block (C s^2).

        Returns:
            lse (B, L): log of the mixture density up to the query-only term: the log of the
                mean (not the sum) of the component weights, so machines compare fairly;
            mean (B, L, v): posterior mean of the block or of the whole patch.
        """
        raise NotImplementedError


class LocalScore(LocalMachine):
    """LS machine: each cell uses the training patches at the same cell only."""

    def patch_posterior(self, q, grid, a, b2, full):
        k = grid.k
        if k not in self._data:
            self._data[k] = grid.unfold(self.images).transpose(0, 1).contiguous()  # (L, N, d)
        p = self._data[k].to(q.device)
        values = p if full else p[..., grid.centre_index.to(q.device)]
        lse, mean = gaussian_posterior(q.transpose(0, 1), p, values, a, b2, None, self.budget)
        lse = lse - torch.log(torch.tensor(float(p.shape[1]), dtype=lse.dtype))
        return lse.transpose(0, 1), mean.transpose(0, 1)  # (B, L), (B, L, v)


class ELS(LocalMachine):
    """Equivariant local score machine: each cell uses the training patches of every cell in
    its boundary class (all cells for "circular"). See `LocalMachine` for the arguments."""

    def _classes(self, grid: PatchGrid) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per boundary class: (cells (L_c,), distinct patches (M_c, d), log multiplicity)."""
        if grid.k not in self._data:
            patches = grid.unfold(self.images)  # (N, L, d)
            classes = grid.boundary_classes
            out = []
            for c in range(int(classes.max()) + 1):
                cells = (classes == c).nonzero().squeeze(1)
                p, log_mult = unique_patches(patches[:, cells].reshape(-1, grid.dim))
                out.append((cells, p, log_mult))
            self._data[grid.k] = out
        return self._data[grid.k]

    def n_distinct_patches(self, k: int) -> int:
        """Distinct training patches of size k over all boundary classes (the softmax width)."""
        return sum(p.shape[0] for _, p, _ in self._classes(self.grid(k)))

    def patch_posterior(self, q, grid, a, b2, full):
        b, n_cells, d = q.shape
        centre = grid.centre_index.to(q.device)
        v = d if full else centre.numel()
        lse = q.new_empty(b, n_cells)
        mean = q.new_empty(b, n_cells, v)
        for cells, p, log_mult in self._classes(grid):
            cells, p, log_mult = cells.to(q.device), p.to(q.device), log_mult.to(q.device)
            qc = q[:, cells].reshape(1, -1, d)  # every cell of the class shares the mixture
            values = p if full else p[:, centre]
            lse_c, mean_c = gaussian_posterior(
                qc, p[None], values[None], a, b2, log_mult[None], self.budget
            )
            n_c = torch.tensor(float(self.images.shape[0] * cells.numel()), dtype=q.dtype)
            lse[:, cells] = lse_c.reshape(b, -1) - n_c.log()
            mean[:, cells] = mean_c.reshape(b, -1, v)
        return lse, mean


class BoundaryBrokenELS(ELS):
    """ELS with zero padding: cells only match training crops of the same boundary class."""

    def __init__(self, images, schedule, patch_size: PatchSpec = 3, *, stride: int = 1, **kwargs):
        super().__init__(images, schedule, patch_size, stride=stride, boundary="zeros", **kwargs)
