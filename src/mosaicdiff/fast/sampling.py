"""Fast DDPM sampling: the same samples as `sampling.ddpm_sample`, several times faster on a CPU.

Three exact rewrites, each tested against the reference:

1. Folding (`FoldedNet`). With hidden tokens h (N, d) after the first conv and nonlinearity,
   the attention logits are q k^T / sqrt(d) = h A h^T with A = W_q W_k^T / sqrt(d) (one d x d
   product instead of two), and the output projection absorbs W_v:
   (h + softmax(.) h W_v) W_out = h W_out + softmax(.) h (W_v W_out), so one (d, 2P) matmul
   gives both terms. identity (Q = K = V = I) folds the same way: A = I / sqrt(d) and the
   values are h W_out, so its N x N mixing runs on P values, not d. top1's hard attention is a
   gather of the winning value row. The timestep embedding plus the first bias is a (T, d)
   table per seed.
2. Token space throughout: x_t is kept as (S, B, N, P) patches; only x_T and x_0 are converted.
   On a CPU with AVX-512, cnn's two thin matmuls compile as broadcast sums (`thin_bmm`): one
   loop over tokens, fused with the update.
3. The noise. By default it is counter-based (`noise.counter_normal`, Threefry): each chunk's
   step makes its own noise inside the compiled kernel from the sample indices and t, so the
   kernel never waits on a serial generator. With noise="torch": `torch.randn` on a CPU fills
   a tensor with uniforms u = (mt19937() & (2^24-1)) / 2^24 and turns each block of 16 into
   normals by Box-Muller (z_j = r cos(2 pi u_{j+8}), z_{j+8} = r sin(2 pi u_{j+8}),
   r = sqrt(-2 log(1 - u_j))). We draw the same uniforms with `torch.rand` from the same
   generator (same stream, same generator state afterwards) and do Box-Muller inside the fused
   per-step kernel: same numbers up to float rounding of log/cos/sin.
   Either way the samples equal `sampling.ddpm_sample`'s with the same `noise` to float rounding.
4. For the paper's networks with Threefry noise on an x86 CPU with AVX2, compiling means the
   native loop of `fast.native` instead: all steps for 8 samples per vector, in registers and
   L1 (several times the compiled step's speed on an AVX2 host).

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
from mosaicdiff.models.patchnet import ACTIVATIONS, PatchNet, patchify, unpatchify
from mosaicdiff.noise import Noise, check_counter_range, check_kind, counter_normal, draw_key
from mosaicdiff.sampling import ddpm_tables

# Samples in one compiled call, over all seeds of the group. With the noise made in the kernel,
# larger chunks amortise the per-call work (~70 us on 2 cores): 16,384 gave cnn 3.8-4.0 and
# attn 5.3 min per 1M samples x 1,000 steps, 4,096 gave 4.9-5.1 and 5.7-6.1. Much larger calls
# lose again: 8 seeds x 12,500 per call (`sample`'s default chunk of 100,000) ran ~2x slower
# than 16,384 per call, since their intermediates (tens of MB) leave the caches. Steady speed at
# any size also needs `allocator.hold_freed_memory` (set by `configure_inductor`).
CHUNK = 16_384


# Whether `thin_bmm` fuses. Measured as paired A/Bs of the compiled cnn step in one process:
# with AVX-512 the fused loop took 0.88x bmm's time (~240 -> ~210 ns per sample-step); with
# AVX2 alone (an AMD EPYC, 256-bit vectors) it took 1.15-1.22x (median 558 vs 640, 537 vs 649,
# 505 vs 618 ns at chunks of 16,384, 4,096 and 8,192), so there MKL's GEMMs stay.
FUSE_THIN_MATMULS = torch.backends.cpu.get_cpu_capability() == "AVX512"


def thin_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.bmm(a, b) for thin matrices: (S, M, K) x (S, K, N) with K, N a few dozen.

    Compiled for a CPU with AVX-512 (`FUSE_THIN_MATMULS`) it is a broadcast sum, which Inductor
    writes as one loop over the rows of a, fused with the bias, activation and update around
    it: no (M, N) intermediate goes to memory between kernels, as it does around MKL's GEMM.
    Same maths; only the order of the K-term sums may differ. Eager (where the broadcast would
    build an M x K x N tensor), on other CPUs and on a GPU it is torch.bmm.
    """
    if FUSE_THIN_MATMULS and torch.compiler.is_compiling() and not a.is_cuda:
        return (a[..., :, None] * b[:, None]).sum(-2)
    return torch.bmm(a, b)


def chunk_count(b: int, seeds: int = 1) -> int:
    """How many chunks to split b samples per seed into, each at most CHUNK samples over all
    `seeds`: the fewest that make them all one size, if at most twice the fewest chunks do,
    since each size is a compilation of its own (~20 s on 2 cores); else the fewest (two
    sizes)."""
    fewest = -(-b // max(1, CHUNK // seeds))
    return next((n for n in range(fewest, 2 * fewest + 1) if b % n == 0), fewest)


class FoldedNet:
    """A trained `PatchNet` (S seeds, eval mode) with its weights folded for sampling.

    Also a `Denoiser` on (S*B, C, H, W) batches, like `PatchNet.as_denoiser()`.
    """

    def __init__(self, model: PatchNet):
        cfg = model.cfg
        self.arch, self.patch, self.image_shape = cfg.arch, cfg.patch, model.image_shape
        self.n_seeds, self.act = model.n_seeds, ACTIVATIONS[cfg.nonlinearity]
        with torch.no_grad():
            d = cfg.hidden
            self.w_in = model.w_in.detach().clone()  # (S, P, d)
            bias = model.b_in.detach()[:, None]  # (S, 1, d)
            if cfg.time_embedding == "sinusoidal":
                temb = model.t_features @ model.w_t.detach() + model.b_t.detach()[:, None]
                bias = bias + temb  # (S, T, d)
            else:
                bias = bias.expand(-1, model.t_features.shape[0], -1)
            self.bias_t = bias.transpose(0, 1).contiguous()  # (T, S, d)
            w_out = model.w_out.detach()  # (S, d, P)
            self.b_out = model.b_out.detach().clone()  # (S, P)
            self.scale = 1 / math.sqrt(d)
            if cfg.arch in ("cnn", "identity"):  # identity: A = I / sqrt(d) is a scalar
                self.a = None
                self.w2 = w_out.clone()  # identity: W_v = I, so the values are h W_out too
            else:
                w_q, w_k, w_v = (w.detach() for w in (model.w_q, model.w_k, model.w_v))
                self.a = (w_q @ w_k.transpose(1, 2) * self.scale).contiguous()  # (S, d, d)
                self.w2 = torch.cat([w_out, w_v @ w_out], -1).contiguous()  # (S, d, 2P)

    def eps_tokens(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Predicted noise in token space: x (S, B, N, P), bias (S, 1, d) -> (S, B, N, P)."""
        s, b, n, p = x.shape
        # cnn's h feeds one product, and with `thin_bmm` the whole network compiles into one
        # kernel: 12% off a cnn sampling step with AVX-512 (paired A/B, 240 -> 210 ns). With
        # attention, h feeds three products; the fused form was 12% faster to 7% slower for
        # attn (three runs), 2.5% slower for top1, 13x slower for identity (h recomputed per
        # logit), so they keep bmm.
        mm = thin_bmm if self.arch == "cnn" else torch.bmm
        # Biases added outside the GEMMs, where the compiler fuses them with the next kernel.
        h = self.act(mm(x.reshape(s, b * n, p), self.w_in) + bias)  # (S, B N, d)
        y2 = mm(h, self.w2)  # cnn, identity: h W_out; attn, top1: [h W_out | h W_v W_out]
        if self.arch == "cnn":
            return y2.view(s, b, n, p) + self.b_out[:, None, None]
        y2 = y2.view(s * b, n, -1)
        values = y2[..., -p:]  # softmax(.) h W_v W_out = softmax(.) values
        ha = h * self.scale if self.a is None else torch.bmm(h, self.a)  # (S, B N, d)
        # N x N products per sample as broadcast sums: one fused kernel when compiled, where
        # MKL's batched GEMM of 4 x 32 matrices is slow.
        logits = (ha.view(s * b, n, 1, -1) * h.view(s * b, 1, n, -1)).sum(-1)  # (S B, N, N)
        if self.arch == "top1":  # hard attention picks one value row per query: a gather
            winner = logits.argmax(-1, keepdim=True).expand(-1, -1, p)  # (S B, N, P)
            mixed = values.gather(1, winner)
        else:
            mixed = (logits.softmax(-1)[..., None] * values[:, None]).sum(2)
        y = y2[..., :p] + mixed
        return y.view(s, b, n, p) + self.b_out[:, None, None]

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The `Denoiser` interface: x_t (S*B, C, H, W), t (1,) -> eps (S*B, C, H, W)."""
        if t.numel() != 1:
            raise ValueError("FoldedNet takes one timestep for the whole batch, t of shape (1,)")
        s = self.n_seeds
        x = patchify(x_t.reshape(s, -1, *x_t.shape[1:]), self.patch)
        eps = self.eps_tokens(x, self.bias_t[int(t)][:, None])
        return unpatchify(eps, self.patch, self.image_shape).reshape(x_t.shape)


def fast_denoiser(model: PatchNet) -> FoldedNet:
    """The folded, gradient-free sampling form of a trained grouped `PatchNet`."""
    return FoldedNet(model)


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
    """`_ddpm_step` with Threefry noise made in the kernel: key (2,), t (1,) int32; index
    (S, b) int32: the chunk's sample indices in the whole (S*B) batch."""
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
        from mosaicdiff.fast.train_step import configure_inductor

        check_kind(noise)
        if noise == "torch" and net.w_in.is_cuda:  # the Box-Muller trick is torch's CPU stream
            raise ValueError("fast DDPM with noise='torch' runs on the CPU only")
        self.net, self.schedule, self.noise = net, schedule, noise
        c_x, c_eps, sigma = ddpm_tables(schedule)
        self.coef = torch.stack([c_x, c_eps, sigma], 1).float().to(net.w_in.device)  # (T, 3)
        step = (_ddpm_step_counter if noise == "threefry" else _ddpm_step).__get__(net)
        # The hand-vectorised sampler, where it runs: compiled too, and several times faster.
        use = compile and native_loop and native.supports(net, noise)
        self.native = use and native.available()
        if compile and not self.native:
            configure_inductor()
            step = torch.compile(step, fullgraph=True, dynamic=False)
        self.step = step

    @torch.inference_mode()
    def __call__(
        self,
        x_T: torch.Tensor,
        generator: torch.Generator,
        n_steps: int | None = None,
        overlap_noise: bool = True,
    ) -> torch.Tensor:
        """Same as `ddpm_sample(net, x_T, generator, schedule, noise=...)`: x_T (S*B, C, H, W)
        -> x_0.

        With `n_steps`, stop after that many steps (for timing). With noise="torch" and
        `overlap_noise`, one helper thread draws the next step's uniforms (in order, from
        `generator` alone) while this one runs the network: the generator is serial.
        """
        net, s = self.net, self.net.n_seeds
        T = self.schedule.T
        if self.native:
            steps = T if n_steps is None else n_steps
            return native.ddpm(net, self.coef, x_T, self._counter_key(x_T, generator), T - 1, steps)
        b_all = x_T.shape[0] // s
        x = patchify(x_T.reshape(s, b_all, *x_T.shape[1:]), net.patch).contiguous()
        # A GPU takes the whole batch at once; a CPU works through cache-sized chunks.
        n_chunks = 1 if x.is_cuda else chunk_count(b_all, s)
        x_chunks = x.tensor_split(n_chunks, 1)
        ts = list(range(T - 1, -1 if n_steps is None else T - 1 - n_steps, -1))
        if self.noise == "threefry":
            self._counter_loop(x_T, x_chunks, generator, ts)
        else:
            self._torch_loop(x_T, x_chunks, generator, ts, overlap_noise)
        return unpatchify(x, net.patch, net.image_shape).reshape(x_T.shape)

    def _counter_key(self, x_T, generator) -> torch.Tensor:
        """The Threefry key of this batch, once its counters are known to fit."""
        check_counter_range(x_T.shape[0], x_T[0].numel(), self.schedule.T)
        return draw_key(generator)

    def _counter_loop(self, x_T, x_chunks, generator, ts) -> None:
        net = self.net
        key = self._counter_key(x_T, generator)
        device = x_T.device
        index = torch.arange(x_T.shape[0], dtype=torch.int32, device=device)
        i_chunks = index.view(net.n_seeds, -1).tensor_split(len(x_chunks), 1)  # of (S, B)
        t_table = torch.arange(self.schedule.T, dtype=torch.int32, device=device)
        for t in ts:
            bias, coef, t_1 = net.bias_t[t][:, None], self.coef[t], t_table[t : t + 1]
            for x_c, i_c in zip(x_chunks, i_chunks, strict=True):
                self.step(x_c, key, t_1, i_c, bias, coef)  # in place; sigma[0] = 0

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
    generator: torch.Generator,
    schedule: Schedule,
    compile: bool = True,
    noise: Noise = "threefry",
) -> torch.Tensor:
    """`sampling.ddpm_sample` for a folded network: the same noise from the same generator, so
    the same samples up to float rounding. x_T (S*B, C, H, W) -> x_0."""
    return FastDDPM(denoiser, schedule, compile, noise)(x_T, generator)
