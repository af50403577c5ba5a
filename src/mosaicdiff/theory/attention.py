"""The attention score machine: ELS plus a mixture centred on the image being generated
(Finn et al. 2025, Sec. 2.2, Eq. 8 and App. A.2).

Eq. 8 says the optimal score of a CNN with one top-1 attention layer is, at every patch Phi,

    grad_Phi(0) log sum_x [ pi_t(phi_Omega_x = Phi) + pi_t(phi_Omega_y*(x) = Phi) ],

the ELS mixture over dataset patches (first term) plus the time-t density of the patch that x
attends to most in the current image (second term). The paper leaves the second density
implicit. This machine makes it constructive as follows; for each cell x of x_t, with noisy
patch q_x = x_t[Omega_x], a = sqrt(alpha_bar_t), b^2 = 1 - alpha_bar_t:

1. Dataset mixture (ELS): components N(q; a P, b^2 I) over the training patches P the cell may
   use (`ELS`), averaged with their multiplicities. Its posterior mean of the *whole* patch,
   c_y = E_ELS[x0[Omega_y] | q_y], is computed for every cell y of the same image.
2. In-image mixture: components N(q; a c_y, b^2 I) for the other cells y != x of the same image.
   The centres are the clean-patch estimates c_y, not the noisy patches: under the paper's patch
   independence the attended patch at time t is a noisy view of some clean patch, and the best
   estimate of that clean patch from x_t is exactly what the ELS term outputs at y (the
   network's g[Phi*] in Eq. 7). Using q_y / a instead would give centres whose noise b / a
   explodes at high noise. The noise level is the same b^2 as the dataset components, because
   both terms of Eq. 8 are densities of a patch at the same time t.
   - attention="soft": all other cells, weighted by their Gaussian likelihood (a softmax over
     the image's other patches, i.e. attention logits -|q_x - a c_y|^2 / (2 b^2));
   - attention="top1": only the most attended cell y*(x) = argmax_y of those logits (Eq. 5).
3. Mixing: pi(q) = (1 - lam) * dataset mixture + lam * in-image mixture. Eq. 8 weighs the two
   sums equally (lam = 1/2); lam = 0 is exactly ELS. The cell's clean block is the posterior
   mean under pi, so each patch is pulled towards its closest dataset patches and, with weight
   growing with lam, towards the (denoised) patches of its own image: copy-and-paste within the
   image, the global self-consistency of the paper.

With "zeros" boundaries, in-image windows are compared as padded. Computation per step: one ELS
pass over whole-patch values plus a (L x L) attention per image.
"""

from __future__ import annotations

import math
from math import inf
from typing import Literal

import torch

from mosaicdiff.errors import check
from mosaicdiff.theory.local import ELS
from mosaicdiff.theory.schedule import PatchSpec


class AttentionELS(ELS):
    """ELS mixed with an in-image mixture (soft or top-1 attention) with weight `lam`.

    Args:
        images, schedule, patch_size, stride, boundary: as for `ELS`.
        lam: weight of the in-image mixture, in [0, 1] (0: ELS; 1/2: Eq. 8 as written).
        attention: "soft" (softmax over the other patches) or "top1" (most attended only).
    """

    def __init__(
        self,
        images: torch.Tensor,
        schedule,
        patch_size: PatchSpec = 3,
        *,
        lam: float = 0.5,
        attention: Literal["soft", "top1"] = "soft",
        **kwargs,
    ):
        check(0.0 <= lam <= 1.0, f"lam={lam} must lie in [0, 1]")
        check(attention in ("soft", "top1"), f"attention={attention!r} must be 'soft' or 'top1'")
        super().__init__(images, schedule, patch_size, **kwargs)
        self.lam, self.attention = float(lam), attention

    def x0_hat(self, x_t: torch.Tensor, t: int, a: float, b2: float) -> torch.Tensor:
        grid = self.grid(self.patch_schedule(t))
        if self.lam == 0.0 or grid.n_cells < 2:
            return super().x0_hat(x_t, t, a, b2)
        q = grid.unfold(x_t)  # (B, L, d)
        lse_d, c = self.patch_posterior(q, grid, a, b2, full=True)  # (B, L), (B, L, d)
        centre = grid.centre_index.to(q.device)
        lse_a, mean_a = self.in_image(q, c, a, b2)  # (B, L), (B, L, d)
        # Responsibility of the in-image mixture: sigmoid of the log-odds of the two terms.
        log_a = math.log(self.lam) + lse_a
        log_d = math.log1p(-self.lam) + lse_d if self.lam < 1.0 else torch.full_like(lse_d, -inf)
        r = torch.sigmoid(log_a - log_d)[..., None]  # (B, L, 1)
        blocks = (1 - r) * c[..., centre] + r * mean_a[..., centre]
        return grid.fold_blocks(blocks)

    def in_image(
        self, q: torch.Tensor, c: torch.Tensor, a: float, b2: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The in-image mixture of every cell over the other cells of its image.

        Args:
            q: (B, L, d) noisy patches; c: (B, L, d) their ELS clean-patch estimates.

        Returns:
            lse (B, L): log of the mean component weight, on the scale of `patch_posterior`'s;
            mean (B, L, d): posterior mean patch under the in-image mixture.
        """
        n_cells = q.shape[1]
        logits = (a / b2) * torch.bmm(q, c.transpose(1, 2))  # (B, L, L): 2a <q_x, c_y> / 2b^2
        logits = logits - (a * a) / (2 * b2) * (c * c).sum(-1)[:, None, :]
        eye = torch.eye(n_cells, dtype=torch.bool, device=q.device)
        logits = logits.masked_fill(eye, float("-inf"))  # a cell does not attend to itself
        if self.attention == "top1":
            lse, best = logits.max(-1)  # y*(x), Eq. 5
            mean = torch.gather(c, 1, best[..., None].expand(-1, -1, c.shape[-1]))
            return lse, mean
        lse = torch.logsumexp(logits, -1) - math.log(n_cells - 1)
        mean = torch.bmm(torch.softmax(logits, -1), c)
        return lse, mean
