"""The native C++ DDPM loop against the compiled step at other network shapes than the paper's.

The loop is built per (tokens, values per token, hidden) shape, and `fast.native.supports`
uses it only within the limits measured faster than the compiled token-space step. This
measures both samplers on untrained networks at each shape asked for, in the same run: ns per
sample-step (best of --reps), their ratio, and whether `supports` picks the loop there. A shape
not yet built is built first (~1 min each, cached in TORCH_EXTENSIONS_DIR like any other); the
limits are lifted here, so shapes beyond them can be measured too.

Run: python -m benchmarks.native_shapes [--archs cnn,attn] [--shapes 4:2:16,4:2:64,8:2:32]
     (a shape is image side : patch : hidden)
"""

from __future__ import annotations

from benchmarks import parse_profiler_args, profiler_parser
from benchmarks.throughput import best_time

DEFAULT_SHAPES = "4:2:16,4:2:32,4:2:64,4:2:128,8:2:32,8:4:32"


def parse_shapes(p, text: str) -> list[tuple[int, int, int]]:
    """--shapes as (side, patch, hidden) triples, or exit with a one-line error."""
    shapes = []
    for item in text.split(","):
        try:
            side, patch, hidden = (int(v) for v in item.split(":"))
        except ValueError:
            p.error(f"--shapes item {item!r} must be side:patch:hidden, e.g. 4:2:32")
        if min(side, patch, hidden) < 1 or side % patch:
            p.error(f"--shapes item {item!r}: positive numbers, with patch dividing side")
        shapes.append((side, patch, hidden))
    return shapes


def ns_per_sample_step(fast, x_T, steps: int, reps: int) -> float:
    import torch

    fast(x_T, torch.Generator().manual_seed(1), 1)  # compile, or load the loop
    best = best_time(lambda: fast(x_T, torch.Generator().manual_seed(1), steps), reps)
    return 1e9 * best / (x_T.shape[0] * steps)


def main(argv=None) -> int:
    p = profiler_parser(__doc__, steps=10)
    p.set_defaults(batch=20_000, archs="cnn,attn")
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"default {DEFAULT_SHAPES}")
    p.add_argument("--reps", type=int, default=3)
    args, archs = parse_profiler_args(p, argv, counts=("batch", "steps", "reps"))
    shapes = parse_shapes(p, args.shapes)
    import torch

    from mosaicdiff.allocator import hold_freed_memory
    from mosaicdiff.config import ModelConfig
    from mosaicdiff.diffusion import Schedule
    from mosaicdiff.fast import native
    from mosaicdiff.fast.folding import FoldedNet
    from mosaicdiff.fast.sampling import FastDDPM
    from mosaicdiff.models import build_model

    torch.set_flush_denormal(True)
    hold_freed_memory()  # as every mosaicdiff command does
    if not native.available():
        raise SystemExit("the native loop does not run here (it needs an x86 CPU with AVX2)")
    schedule = Schedule.linear()
    print(f"ns per sample-step ({args.batch} samples x {args.steps} steps, best of {args.reps})")
    print(
        f"{'arch':9}{'side':>5}{'patch':>6}{'hidden':>7}  {'N x P x H':11}"
        f"{'native':>8}{'compiled':>10}{'ratio':>7}  used"
    )
    supports = native.supports
    native.supports = lambda net, noise: True  # measure beyond the limits too
    try:
        for side, patch, hidden in shapes:
            for arch in archs:
                cfg = ModelConfig(arch=arch, patch=patch, hidden=hidden)
                model = build_model(cfg, (3, side, side), schedule.T, seeds=(0,))
                net = FoldedNet(model.eval().requires_grad_(False))
                shape, fast = native.shape_of(net), FastDDPM(net, schedule)
                row = f"{arch:9}{side:5}{patch:6}{hidden:7}  {'x'.join(map(str, shape)):11}"
                if not fast.native:
                    print(f"{row}the loop cannot be built for this shape", flush=True)
                    continue
                x_T = torch.randn(args.batch, 3, side, side, generator=torch.Generator())
                ours = ns_per_sample_step(fast, x_T, args.steps, args.reps)
                compiled = FastDDPM(net, schedule, native_loop=False)
                base = ns_per_sample_step(compiled, x_T, args.steps, args.reps)
                used = supports(net, "threefry")
                cells = f"{ours:8.0f}{base:10.0f}{base / ours:6.2f}x  {'yes' if used else 'no'}"
                print(row + cells, flush=True)
    finally:
        native.supports = supports
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
