"""A closed-form score machine of your own, sampled and measured by mosaicdiff as its own are.

The Gaussian machine: the optimal denoiser when the data are taken for one Gaussian N(mu, Sigma)
with the training images' mean and covariance, i.e. the Wiener filter

    x0_hat = mu + a Sigma (a^2 Sigma + b^2 I)^-1 (x_t - a mu),  a^2 = alpha_bar, b^2 = 1 - a^2.

It is neither local nor a mixture over training images, so it never copies one: the linear
baseline that the patch mosaics of ELS and the copies of the ideal score sit between. Name it by
its file and class wherever a machine goes:

    mosaicdiff theory sample --machine examples/own_machine.py:Gaussian --data digits \\
        --n 200 --out theory/gauss
    mosaicdiff theory compare runs/unet --machine examples/own_machine.py:Gaussian --out cmp

or from Python: `Gaussian(images, schedule)` is a `Denoiser` for `mosaicdiff.sampling`.
"""

import torch

from mosaicdiff.theory.base import ScoreMachine


class Gaussian(ScoreMachine):
    """x0_hat of one Gaussian fitted to the training images, by the eigenvectors of its
    covariance. Takes none of the patch options (its __init__ has no patch_size)."""

    def __init__(self, images, schedule, **kw):
        super().__init__(images, schedule, **kw)
        flat = self.images.flatten(1)  # (N, D)
        self.mu = flat.mean(0)  # (D,)
        # One image has no spread (torch.cov would divide by N - 1 = 0): Sigma = 0, the mean.
        cov = torch.cov(flat.T, correction=int(len(flat) > 1))
        cov = cov.reshape(flat.shape[1], flat.shape[1])  # (D, D)
        self.lam, self.U = torch.linalg.eigh(cov)  # Sigma = U diag(lam) U^T
        self.lam = self.lam.clamp(min=0)

    def x0_hat(self, x_t, t, a, b2):
        z = (x_t.flatten(1) - a * self.mu) @ self.U  # (B, D) in the eigenbasis
        gain = a * self.lam / (a * a * self.lam + b2)  # (D,)
        return (self.mu + (z * gain) @ self.U.T).view(x_t.shape)
