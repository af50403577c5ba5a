"""Where the native C++ DDPM loop's time goes: the loop timed against copies of it with one part
taken out.

The loop (`fast/ddpm_loop.cpp`, the default sampler for the paper's networks on AVX2 and
AVX-512) is one call, which torch.profiler cannot split. So this builds two copies of its
source: one whose Threefry + Box-Muller noise is zeros, one whose SiLU is the identity (no
exponentials). A part's cost is the full loop's time minus the copy's. Without SiLU the attention
sees other activations, so that column is approximate. Each copy takes ~1 min to build; nothing
is cached.

Run: python -m benchmarks.profile_native [--archs cnn,attn] [--batch 100000] [--steps 50]
"""

from __future__ import annotations

import tempfile
import time

from benchmarks import parse_profiler_args, profiler_parser

NOISE_HEAD = "inline void noise(const uint32_t key[3], Bits index, int64_t t, Vec* z) {\n"
ZERO_NOISE = "  for (int j = 0; j < D; ++j) z[j] = Vec(0.0f);\n  return;\n"
SILU = "inline Vec silu(Vec v) { return v / (Vec(1.0f) + v.neg().exp_u20()); }"
NO_SILU = "inline Vec silu(Vec v) { return v; }"


def without(source: str) -> dict[str, str]:
    """The loop's source with each part taken out, by the part's name."""
    for marker in (NOISE_HEAD, SILU):
        if marker not in source:
            raise SystemExit(f"ddpm_loop.cpp changed: update {__file__} (no {marker[:40]!r}...)")
    return {
        "noise": source.replace(NOISE_HEAD, NOISE_HEAD + ZERO_NOISE),
        "silu exp": source.replace(SILU, NO_SILU),
    }


def build(name: str, source: str):
    from mosaicdiff.fast import native

    with tempfile.TemporaryDirectory() as tmp:
        return native.build(f"mosaicdiff_profile_{name.replace(' ', '_')}", source, tmp)


def ns_per_sample_step(arch: str, modules: dict, batch: int, steps: int, reps: int) -> dict:
    """Best-of-`reps` time of `steps` DDPM steps on `batch` samples, per module."""
    import torch

    from mosaicdiff.config import ModelConfig
    from mosaicdiff.diffusion import Schedule
    from mosaicdiff.fast import native
    from mosaicdiff.fast.folding import FoldedNet
    from mosaicdiff.fast.sampling import FastDDPM
    from mosaicdiff.models import build_model

    model = build_model(ModelConfig(arch=arch), (3, 4, 4), 1000, seeds=(0,)).eval()
    fast = FastDDPM(FoldedNet(model.requires_grad_(False)), Schedule.linear())
    if not fast.native:
        raise SystemExit("the native loop does not run here (it needs an x86 CPU with AVX2)")
    x_T = torch.randn(batch, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    best, real = dict.fromkeys(modules, float("inf")), native._module
    try:
        for _ in range(reps):  # the copies take turns, so a slow spell of the host hits all
            for name, module in modules.items():
                native._module = lambda *_, module=module: module
                tick = time.perf_counter()
                fast(x_T, torch.Generator().manual_seed(1), steps)
                best[name] = min(best[name], time.perf_counter() - tick)
    finally:
        native._module = real
    return {name: 1e9 * t / (batch * steps) for name, t in best.items()}


def main(argv=None) -> int:
    p = profiler_parser(__doc__, steps=50)
    p.add_argument("--reps", type=int, default=7)
    args, archs = parse_profiler_args(p, argv, counts=("batch", "steps", "reps"))
    import torch

    from mosaicdiff.allocator import hold_freed_memory
    from mosaicdiff.fast import native

    torch.set_flush_denormal(True)
    hold_freed_memory()  # as every mosaicdiff command does
    if not native.available():
        raise SystemExit("the native loop does not run here (it needs an x86 CPU with AVX2)")
    modules = {"full": native._module()}
    for name, source in without(native.SOURCE.read_text()).items():
        tick = time.time()
        modules[name] = build(name, source)
        print(f"built the loop without {name} in {time.time() - tick:.0f} s", flush=True)
    parts = [name for name in modules if name != "full"]
    print(f"\nns per sample-step ({args.batch} samples x {args.steps} steps, best of {args.reps})")
    print(f"{'arch':9}{'full':>7}" + "".join(f"{name:>18}" for name in parts))
    for arch in archs:
        ns = ns_per_sample_step(arch, modules, args.batch, args.steps, args.reps)
        cells = []
        for name in parts:
            cost = ns["full"] - ns[name]
            cells.append(f"{cost:8.0f} ({100 * cost / ns['full']:3.0f} %)")
        print(f"{arch:9}{ns['full']:7.0f}" + "".join(f"{c:>18}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
