"""The samplers' Gaussian noise: counter-based (Threefry) by default, or torch's generator stream.

`threefry`: every noise value is a pure function of (key, step t, sample index, value index).
The key is drawn once from the sampler's generator; the counter names the value. So the noise
does not depend on chunking, order, thread count or device, and a compiled sampling step makes
its own noise inside the kernel instead of waiting on a serial generator (on a 2-core CPU,
`torch.randn`'s Mersenne Twister alone took ~3 of the ~7 minutes of a 1M x 1,000-step run).

- Threefry-2x32 with 20 rounds (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2,
  3"; JAX's default generator): two 32-bit words of key, two of counter, two of output. Tested
  against the paper's known-answer vectors. Written with int32 tensor ops (adds wrap modulo
  2^32; right shifts are masked to be logical), so it runs eagerly and compiles into a kernel.
- Uniforms u = (bits >> 8) / 2^24 in [0, 1) (the high 24 bits; `torch.rand` keeps the low 24
  of its own generator's word), and Box-Muller:
  z = sqrt(-2 log(1 - u1)) (cos 2 pi u2, sin 2 pi u2).
- Layout: sample i's D values are P = ceil(D/2) pairs j; pair j's counter is (i, t P + j); its
  cosine normal is value j and its sine normal value P + j (for an odd D, the last is dropped).

`torch`: `torch.randn(shape, generator=g)` at every step, the stream diffusers' schedulers use.

Threefry's key and counters come from a generator (one key it draws, samples counted from 0 in
the batch), or are given as `Counters`: a key and an index per sample, so that a sample's noise
is the same whatever batch it is drawn in. `sample.noise="indexed"` (the default) gives each
training seed a key of its own, made from the sample seed and that seed (`seed_key`), and
counts samples by their index in the samples folder; `Counters.initial` draws x_T from the same
counters at t = T, past every step's. So a sample depends on (sample seed, training seed,
index) alone: not on the chunk, the number of samples, or the seeds trained beside it.
"""

from __future__ import annotations

import hashlib
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mosaicdiff.config import Noise, SampleNoise

NOISES = typing.get_args(Noise)

_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)  # Threefry-2x32 rotation constants R_{r mod 8}
_PARITY = 0x1BD11BDA  # Skein's key-schedule parity constant


def _rotl(x: torch.Tensor, r: int) -> torch.Tensor:
    """Rotate 32-bit words left by r (int32 tensors; the right shift is masked to be logical)."""
    return (x << r) | ((x >> (32 - r)) & ((1 << r) - 1))


def threefry2x32(k0, k1, c0: torch.Tensor, c1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Threefry-2x32-20 of counters (c0, c1) under key (k0, k1), all int32 (broadcasting)."""
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = c0 + k0, c1 + k1
    for r in range(20):
        x0 = x0 + x1
        x1 = _rotl(x1, _ROTATIONS[r % 8]) ^ x0
        if r % 4 == 3:  # key injection every 4 rounds
            i = (r + 1) // 4
            x0 = x0 + ks[i % 3]
            x1 = x1 + ks[(i + 1) % 3] + i
    return x0, x1


def _uniform(bits: torch.Tensor) -> torch.Tensor:
    return ((bits >> 8) & 0xFFFFFF).float() * (1.0 / 16_777_216)


def counter_normal(key: torch.Tensor, t, index: torch.Tensor, values: int) -> torch.Tensor:
    """Standard normals for samples `index` (int32, any shape I) at step `t` -> (*I, values).

    `key` is int32 (..., 2): one key (2,), or a key per sample, its leading dimensions
    broadcastable against I; `t` an int or an int32 tensor broadcastable against `index`.
    """
    pairs = -(-values // 2)  # an odd count drops the last pair's sine
    j = torch.arange(pairs, dtype=torch.int32, device=index.device)
    k0, k1 = key[..., 0, None], key[..., 1, None]
    a, b = threefry2x32(k0, k1, index[..., None], t * pairs + j)
    r = torch.sqrt(-2.0 * torch.log(1.0 - _uniform(a)))
    theta = (2 * math.pi) * _uniform(b)
    z = torch.cat([r * torch.cos(theta), r * torch.sin(theta)], -1)
    return z if values % 2 == 0 else z[..., :values]


def _int32(k: torch.Tensor) -> torch.Tensor:
    return torch.where(k >= 2**31, k - 2**32, k).to(torch.int32)


def draw_key(generator: torch.Generator) -> torch.Tensor:
    """A Threefry key (int32 (2,)) drawn from `generator`."""
    return _int32(torch.randint(0, 2**32, (2,), generator=generator, device=generator.device))


def seed_key(*seeds: int) -> torch.Tensor:
    """The Threefry key (int32 (2,)) of `seeds` (a sample seed, and a training seed where there
    is one): the first 8 bytes of their SHA-256, so any seeds give unrelated keys."""
    text = "mosaicdiff noise " + " ".join(str(int(s)) for s in seeds)
    digest = hashlib.sha256(text.encode()).digest()
    return _int32(torch.tensor([int.from_bytes(digest[i : i + 4], "little") for i in (0, 4)]))


@dataclass(frozen=True)
class Counters:
    """The Threefry key and counter of each sample of a batch: `key` int32 (B, 2), `index`
    int32 (B,). Sample b's noise at step t is `counter_normal(key[b], t, index[b], D)`."""

    key: torch.Tensor
    index: torch.Tensor

    @classmethod
    def drawn(cls, generator: torch.Generator, b: int) -> Counters:
        """One key drawn from `generator` for all `b` samples, counted from 0: the counters of a
        sampler given a generator."""
        key = draw_key(generator)
        index = torch.arange(b, dtype=torch.int32, device=key.device)
        return cls(key.expand(b, 2), index)

    @classmethod
    def of_seeds(cls, keys: torch.Tensor, first: int, n: int) -> Counters:
        """Samples [first, first + n) of each seed whose key is a row of `keys` (S, 2), seed by
        seed: S*n samples, as a group's batch (S contiguous blocks of n)."""
        index = torch.arange(first, first + n, dtype=torch.int32, device=keys.device)
        return cls(keys.repeat_interleave(n, 0), index.repeat(keys.shape[0]))

    def to(self, device) -> Counters:
        return Counters(self.key.to(device), self.index.to(device))

    def normal(self, t, values: int) -> torch.Tensor:
        """(B, values) standard normals of step `t`."""
        return counter_normal(self.key, t, self.index, values)

    def initial(self, shape: tuple[int, ...], T: int) -> torch.Tensor:
        """x_T (B, *shape): the normals of counter t = T, which no step of T uses."""
        values = math.prod(shape)
        check_counter_range(self.end, values, T + 1)
        return self.normal(T, values).view(-1, *shape)

    @property
    def end(self) -> int:
        """One past the largest index."""
        return int(self.index.max()) + 1 if len(self.index) else 0

    def per_seed(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys (s, 2), first (s,)) where the batch is s blocks, each of one key and of
        consecutive indices from its first (as `of_seeds` and `drawn` make them); else a
        ValueError."""
        key, index = self.key.view(s, -1, 2), self.index.view(s, -1)
        steps = torch.arange(index.shape[1], dtype=torch.int32, device=index.device)
        if not (
            torch.equal(key, key[:, :1].expand_as(key))
            and torch.equal(index - steps, index[:, :1].expand_as(index))
        ):
            raise ValueError("these counters are not a key and a run of indices per seed")
        return key[:, 0].contiguous(), index[:, 0].contiguous()


def check_kind(kind: str) -> None:
    if kind not in NOISES:
        raise ValueError(f"noise={kind!r} is not one of {NOISES}")


def sampler_kind(noise: SampleNoise) -> Noise:
    """The samplers' noise (`step_noise`) of a `sample.noise`: indexed noise is Threefry's,
    from `Counters` given to the sampler instead of a generator."""
    return "threefry" if noise == "indexed" else noise


def check_counter_range(n_samples: int, values: int, T: int) -> None:
    """The counters must fit in 31 bits: sample indices, and t ceil(D/2) + j."""
    if n_samples > 2**31 or T * -(-values // 2) > 2**31:
        raise ValueError(
            f"threefry noise needs counters under 2^31, not {n_samples} samples x {values} "
            f"values x {T} steps; use noise='torch'"
        )


def batch_counters(
    kind: Noise, generator: torch.Generator | Counters, x: torch.Tensor, T: int
) -> Counters | None:
    """The Threefry counters of x's samples (B, ...) on x's device, by `kind`: the `Counters`
    given, or one key drawn from `generator` (`Counters.drawn`); None for torch's stream.
    Counters given for torch's stream or for another number of samples are refused, and so are
    counters past 31 bits."""
    check_kind(kind)
    given = isinstance(generator, Counters)
    if given and (kind != "threefry" or len(generator.index) != x.shape[0]):
        raise ValueError(
            f"counters of {len(generator.index)} samples for {x.shape[0]} samples with "
            f"noise={kind!r}: counters are Threefry's, one per sample"
        )
    if kind == "torch":
        return None
    counters = generator if given else Counters.drawn(generator, x.shape[0])
    check_counter_range(counters.end, x[0].numel(), T)
    return counters.to(x.device)


def step_noise(
    kind: Noise, generator: torch.Generator | Counters, x: torch.Tensor, T: int
) -> Callable[[int], torch.Tensor]:
    """`noise(t) -> z` shaped like x (B, ...): the sampler's noise for step t, by `kind`, from
    `generator` or, for Threefry, from the `Counters` of x's samples (`batch_counters`)."""
    counters = batch_counters(kind, generator, x, T)
    if counters is None:
        z = torch.empty_like(x)
        return lambda t: torch.randn(x.shape, generator=generator, out=z)
    values = x[0].numel()
    return lambda t: counters.normal(t, values).view(x.shape).to(x.dtype)
