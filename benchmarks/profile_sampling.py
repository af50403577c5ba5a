"""Where the fast sampler's time goes: the share of each kernel in a few compiled DDPM steps.

Runs `fast.sampling.FastDDPM` (default noise) on an untrained network of each architecture
under torch.profiler, with inductor's per-kernel profiling on, and prints the kernels with the
largest self time. Fused kernels are named by the ops inductor put in them (`silu`, `softmax`,
the Threefry shifts and xors, `cos`/`log` of Box-Muller); `aten::bmm` is MKL's GEMM. The native
C++ loop (`fast.native`, the default for the paper's networks on AVX2) would be one opaque call,
so this profiles the compiled step, which other shapes, torch noise and GPUs run.

Run: python -m benchmarks.profile_sampling [--archs cnn,attn] [--batch 100000] [--steps 40]
"""

from __future__ import annotations

import re

from benchmarks import parse_profiler_args, profiler_parser
from mosaicdiff.allocator import hold_freed_memory


def profile_arch(arch: str, batch: int, steps: int, top: int) -> list[tuple[float, str]]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from mosaicdiff.config import ModelConfig
    from mosaicdiff.diffusion import Schedule
    from mosaicdiff.fast.folding import FoldedNet
    from mosaicdiff.fast.sampling import FastDDPM
    from mosaicdiff.models import build_model

    model = build_model(ModelConfig(arch=arch), (3, 4, 4), 1000, seeds=(0,)).eval()
    net = FoldedNet(model.requires_grad_(False))
    fast = FastDDPM(net, Schedule.linear(), native_loop=False)
    x_T, g = torch.randn(batch, 3, 4, 4), torch.Generator().manual_seed(0)
    fast(x_T, g, 2)  # compile first
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fast(x_T, g, steps)
    # Chunks of another size are compiled graphs of their own (graph_N_ names): add them up.
    self_time: dict[str, float] = {}
    for r in prof.key_averages():
        name = re.sub(r"^graph_\d+_", "", r.key)
        self_time[name] = self_time.get(name, 0.0) + r.self_cpu_time_total
    total = sum(self_time.values())
    ranked = sorted(self_time.items(), key=lambda kv: -kv[1])[:top]
    return [(100 * t / total, name) for name, t in ranked]


def main(argv=None) -> int:
    # Enough steps that the batch's one-time change to token layout and back (aten::copy_)
    # stays a few percent, as it is in a 1,000-step run.
    p = profiler_parser(__doc__, steps=40)
    p.add_argument("--top", type=int, default=8)
    args, archs = parse_profiler_args(p, argv, counts=("batch", "steps", "top"))
    import torch
    import torch._inductor.config as inductor_config

    inductor_config.cpp.enable_kernel_profile = True
    torch.set_flush_denormal(True)
    hold_freed_memory()  # as every mosaicdiff command does
    for arch in archs:
        for share, name in profile_arch(arch, args.batch, args.steps, args.top):
            print(f"{arch:9}{share:6.1f}%  {name[:100]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
