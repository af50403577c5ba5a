"""Fast DDPM sampling: the same samples as `sampling.ddpm_sample`, several times faster on a CPU.

Exact rewrites, each tested against the reference:

1. Folding (`fast.folding.FoldedNet`): Q and K folded into one d x d matrix, V into the
   output projection; the timestep embedding plus the first bias a (T, d) table per seed.
2. Token space throughout: x_t is kept as (S, B, N, P) patches; only x_T and x_0 are converted.
3. The noise. By default it is counter-based (`noise.counter_normal`, Threefry): each chunk's
   step makes its own noise inside the compiled kernel from the samples' keys and indices and t
   (`noise.Counters`), so the kernel never waits on a serial generator. With noise="torch":
   `torch.randn` on a CPU fills a tensor with uniforms u = (mt19937() & (2^24-1)) / 2^24 and
   turns each block of 16 into normals by Box-Muller (z_j = r cos(2 pi u_{j+8}),
   z_{j+8} = r sin(2 pi u_{j+8}), r = sqrt(-2 log(1 - u_j))). We draw the same uniforms with
   `torch.rand` from the same generator (same stream, same generator state afterwards) and do
   Box-Muller inside the fused per-step kernel: same numbers up to float rounding of log/cos/sin.
   Either way the samples equal `sampling.ddpm_sample`'s with the same `noise` to float rounding.
4. For the paper's networks with Threefry noise on an x86 CPU with AVX2, compiling means the
   native loop of `fast.native` instead: all steps for 8 samples per vector (16 with
   AVX-512), in registers and L1 (several times the compiled step's speed).

The per-step update x_{t-1} = c_x[t] x_t - c_eps[t] eps + sigma[t] z (Ho et al. 2020, Alg. 2;
tables from `sampling.ddpm_tables`) is fused with the network into one compiled function that
runs over cache-sized chunks of the batch.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch

from mosaicdiff.diffusion import Schedule
from mosaicdiff.fast import native
from mosaicdiff.fast.folding import FoldedNet
from mosaicdiff.fast.inductor import can_compile, configure_inductor
from mosaicdiff.models.patchnet import patchify, unpatchify
from mosaicdiff.noise import Counters, Noise, batch_counters, check_kind, counter_normal
from mosaicdiff.sampling import ddpm_tables

# Samples in one compiled call, over all seeds of the group. With the noise made in the kernel,
# larger chunks amortise the per-call work (~70 us on 2 cores): 16,384 gave cnn 3.8-4.0 and
# attn 5.3 min per 1M samples x 1,000 steps, 4,096 gave 4.9-5.1 and 5.7-6.1. Much larger calls
# lose again: 8 seeds x 12,500 per call (`sample`'s default chunk of 100,000) ran ~2x slower
# than 16,384 per call, since their intermediates (tens of MB) leave the caches. Steady speed at
# any size also needs `allocator.hold_freed_memory` (set by `configure_inductor`).
CHUNK = 16_384


def chunk_count(b: int, seeds: int = 1) -> int:
    """How many chunks to split b samples per seed into, each at most CHUNK samples over all
    `seeds`: the fewest that make them all one size, if at most twice the fewest chunks do,
    since each size is a compilation of its own (~20 s on 2 cores); else the fewest (two
    sizes)."""
    fewest = -(-b // max(1, CHUNK // seeds))
    return next((n for n in range(fewest, 2 * fewest + 1) if b % n == 0), fewest)


def patchify_pairs(x: torch.Tensor, p: int) -> torch.Tensor:
    """`patchify` for a compiled kernel, bit for bit: with p even, moves float32 values two at a
    time, as int64. Inductor writes patchify's permutation as a scalar copy (its innermost run
    is p values); halving its loads and stores took 2-3% off a cnn sampling step (same samples)."""
    if p % 2 or x.dtype != torch.float32 or not x.is_contiguous():
        return patchify(x, p)
    *lead, c, h, w = x.shape
    pairs = x.view(torch.int64).reshape(*lead, c, h // p, p, w // p, p // 2)
    n = len(lead)
    pairs = pairs.permute(*range(n), n + 1, n + 3, n, n + 2, n + 4)  # (..., H/p, W/p, C, p, p/2)
    return pairs.reshape(*lead, (h // p) * (w // p), c * p * p // 2).view(torch.float32)


def box_muller(u: torch.Tensor) -> torch.Tensor:
    """What `torch.randn` makes of the uniforms `torch.rand` would draw: u (..., 16k) -> z."""
    blocks = u.reshape(*u.shape[:-1], -1, 2, 8)
    r = torch.sqrt(-2.0 * torch.log(1.0 - blocks[..., 0, :]))
    theta = 2.0 * math.pi * blocks[..., 1, :]
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], -2).reshape(u.shape)


def _ddpm_step(net: FoldedNet, x, u, bias, coef):
    """One ancestral step on a chunk, in place: x (S, b, N, P) tokens becomes x_{t-1}; u (S, b,
    C H W) uniforms in image layout, bias (S, 1, d), coef (3,) = (c_x, c_eps, sigma)."""
    eps = net.eps_tokens(x, bias)
    s, b = u.shape[:2]
    z = patchify_pairs(box_muller(u).view(s, b, *net.image_shape), net.patch)
    return x.copy_(coef[0] * x - coef[1] * eps + coef[2] * z)


def _ddpm_step_counter(net: FoldedNet, x, key, t, index, bias, coef):
    """`_ddpm_step` with Threefry noise made in the kernel: t (1,) int32; key (S, b, 2) and
    index (S, b) int32: the chunk's samples' `noise.Counters`."""
    eps = net.eps_tokens(x, bias)
    s, b = index.shape
    z = counter_normal(key, t, index, math.prod(net.image_shape)).view(s, b, *net.image_shape)
    return x.copy_(coef[0] * x - coef[1] * eps + coef[2] * patchify_pairs(z, net.patch))


class FastDDPM:
    """`fast_ddpm_sample` with its compiled step kept, for sampling many chunks."""

    def __init__(
        self,
        net: FoldedNet,
        schedule: Schedule,
        compile: bool = True,
        noise: Noise = "threefry",
        native_loop: bool = True,
    ):
        check_kind(noise)
        if noise == "torch" and net.w_in.is_cuda:  # the Box-Muller trick is torch's CPU stream
            raise ValueError("fast DDPM with noise='torch' runs on the CPU only")
        self.net, self.schedule, self.noise = net, schedule, noise
        c_x, c_eps, sigma = ddpm_tables(schedule)
        self.coef = torch.stack([c_x, c_eps, sigma], 1).float().to(net.w_in.device)  # (T, 3)
        step = (_ddpm_step_counter if noise == "threefry" else _ddpm_step).__get__(net)
        # The hand-vectorised sampler, where it runs: compiled too, and several times faster.
        compile = compile and can_compile(net.w_in.device)  # both need a C++ compiler
        use = compile and native_loop and native.supports(net, noise)
        self.native = use and native.available(native.shape_of(net))
        if compile and not self.native:
            configure_inductor()
            step = torch.compile(step, fullgraph=True, dynamic=False)
        self.step = step

    @torch.inference_mode()
    def __call__(
        self,
        x_T: torch.Tensor,
        generator: torch.Generator | Counters,
        n_steps: int | None = None,
        overlap_noise: bool = True,
    ) -> torch.Tensor:
        """Same as `ddpm_sample(net, x_T, generator, schedule, noise=...)`: x_T (S*B, C, H, W)
        -> x_0. `generator` may be the samples' Threefry `Counters` instead.

        With `n_steps`, stop after that many steps (for timing). With noise="torch" and
        `overlap_noise`, one helper thread draws the next step's uniforms (in order, from
        `generator` alone) while this one runs the network: the generator is serial.
        """
        net, s = self.net, self.net.n_seeds
        T = self.schedule.T
        if n_steps is not None and not 0 <= n_steps <= T:  # past t = 0 the tables run out
            raise ValueError(f"n_steps={n_steps} must be in [0, {T}]")
        counters = batch_counters(self.noise, generator, x_T, T)  # None: torch's stream
        if self.native:
            steps = T if n_steps is None else n_steps
            keys, first = counters.per_seed(s)
            return native.ddpm(net, self.coef, x_T, keys, first, T - 1, steps)
        b_all = x_T.shape[0] // s
        x = patchify(x_T.reshape(s, b_all, *x_T.shape[1:]), net.patch).contiguous()
        # A GPU takes the whole batch at once; a CPU works through cache-sized chunks.
        n_chunks = 1 if x.is_cuda else chunk_count(b_all, s)
        x_chunks = x.tensor_split(n_chunks, 1)
        ts = list(range(T - 1, -1 if n_steps is None else T - 1 - n_steps, -1))
        if counters is not None:
            self._counter_loop(counters, x_chunks, ts)
        else:
            self._torch_loop(x_T, x_chunks, generator, ts, overlap_noise)
        return unpatchify(x, net.patch, net.image_shape).reshape(x_T.shape)

    def _counter_loop(self, counters: Counters, x_chunks, ts) -> None:
        net, n = self.net, len(x_chunks)
        device = counters.index.device
        k_chunks = counters.key.view(net.n_seeds, -1, 2).tensor_split(n, 1)  # of (S, B, 2)
        i_chunks = counters.index.view(net.n_seeds, -1).tensor_split(n, 1)  # of (S, B)
        t_table = torch.arange(self.schedule.T, dtype=torch.int32, device=device)
        for t in ts:
            bias, coef, t_1 = net.bias_t[t][:, None], self.coef[t], t_table[t : t + 1]
            for x_c, k_c, i_c in zip(x_chunks, k_chunks, i_chunks, strict=True):
                self.step(x_c, k_c, t_1, i_c, bias, coef)  # in place; sigma[0] = 0

    def _torch_loop(self, x_T, x_chunks, generator, ts, overlap_noise: bool) -> None:
        net, s = self.net, self.net.n_seeds
        b_all, n_chunks = x_T.shape[0] // s, len(x_chunks)
        n_numbers = x_T[0].numel()
        if n_numbers % 16:  # randn only splits into our Box-Muller blocks for 16k values
            raise ValueError(f"fast DDPM with torch noise needs 16k values, not {n_numbers}")
        buffers = [torch.empty(s, b_all, n_numbers) for _ in range(2 if overlap_noise else 1)]
        noisy = [t for t in ts if t > 0]  # the reference draws noise on these steps only

        def draw(i: int) -> torch.Tensor:
            u = buffers[i % len(buffers)]
            with torch.inference_mode():  # thread-local: the helper thread needs it too
                return torch.rand(u.shape, generator=generator, out=u)

        pool = ThreadPoolExecutor(1) if overlap_noise else None
        try:
            pending = pool.submit(draw, 0) if pool and noisy else None
            u = buffers[0]
            for i, t in enumerate(ts):
                if t > 0:
                    if pool:
                        u = pending.result()
                        if i + 1 < len(noisy):
                            pending = pool.submit(draw, i + 1)
                    else:
                        u = draw(i)
                bias, coef = net.bias_t[t][:, None], self.coef[t]
                for x_c, u_c in zip(x_chunks, u.tensor_split(n_chunks, 1), strict=True):
                    self.step(x_c, u_c, bias, coef)  # in place; sigma[0] = 0 ignores u
        finally:
            if pool:
                pool.shutdown()


def fast_ddpm_sample(
    denoiser: FoldedNet,
    x_T: torch.Tensor,
    generator: torch.Generator | Counters,
    schedule: Schedule,
    compile: bool = True,
    noise: Noise = "threefry",
) -> torch.Tensor:
    """`sampling.ddpm_sample` for a folded network: the same noise from the same generator, so
    the same samples up to float rounding. x_T (S*B, C, H, W) -> x_0."""
    return FastDDPM(denoiser, schedule, compile, noise)(x_T, generator)
