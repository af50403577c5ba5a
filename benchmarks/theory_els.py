"""Benchmark: ELS sampling of 8x8 digits against the 1,797 scikit-learn digits.

The full setting is 1,000 images with all 1,000 DDPM steps, k = 3, circular boundary; `--quick`
samples 20 images over 5 DDIM steps of the same schedule. Every step costs the same (the
softmax runs over every distinct training patch at every noise level), so the per-step time
measured by a short run extrapolates linearly, and the script prints that extrapolation too.

Work per step: B * 64 query patches against M distinct 3x3 training patches (M = 75,724 of
115,008), one exp and ~2 (d + 2) flops per pair, d = 9. The full setting is therefore
1000 * 1000 * 64 * 75,724 = 4.8e12 exact patch pairs: at the 560-730 M pairs/s one core of a
Zen 5 EPYC sustained (float32, 40 images x 10 DDIM steps; 260-280 before `mixture.LOG_FLOOR` and
the component-major products), that is hours, not a minute; the printed extrapolation says how
many here. One thread is the default: on a shared 2-core machine two threads contend badly
(measured 7 vs 58 M pairs/s under load, on an older host).

Run: python -m benchmarks.theory_els [--quick] [--precision float64] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from mosaicdiff.cli import Parser
from mosaicdiff.data.digits import load_digits
from mosaicdiff.diffusion import Schedule
from mosaicdiff.sampling import ddim_sample, ddpm_sample
from mosaicdiff.theory import ELS

FULL_N, FULL_STEPS = 1000, 1000


def main(argv=None) -> None:
    p = Parser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20 images, 5 DDIM steps")
    p.add_argument("--n", type=int, default=None, help="images to sample (default 1,000)")
    p.add_argument("--steps", type=int, default=None, help="steps; < 1000 uses DDIM (default all)")
    p.add_argument("--patch", type=int, default=3, help="ELS patch size k")
    p.add_argument("--precision", default="float32", help="softmax arithmetic: float32|float64")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0, help="seed of x_T and the sampler noise")
    args = p.parse_args(argv)
    n = args.n or (20 if args.quick else FULL_N)
    steps = args.steps or (5 if args.quick else FULL_STEPS)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.precision]
    torch.set_num_threads(args.threads)

    schedule = Schedule.linear()
    images = load_digits().images
    t0 = time.perf_counter()
    machine = ELS(images, schedule, args.patch, dtype=dtype)
    machine(torch.zeros(1, 1, 8, 8), torch.tensor([0]))  # builds the distinct-patch table
    setup = time.perf_counter() - t0
    n_patches = machine.n_distinct_patches(args.patch)

    g = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn(n, 1, 8, 8, generator=g)
    t0 = time.perf_counter()
    if steps >= schedule.T:
        x0 = ddpm_sample(machine, x_T, g, schedule)
        steps = schedule.T
    else:
        x0 = ddim_sample(machine, x_T, g, schedule, steps=steps)
    elapsed = time.perf_counter() - t0
    assert torch.isfinite(x0).all()

    per_step = elapsed / steps
    pairs = n * 64 * n_patches * steps
    full = per_step * FULL_STEPS * FULL_N / n
    print(
        f"ELS k={args.patch} {args.precision}, {args.threads} thread(s): {n} images x {steps} "
        f"steps in {elapsed:.1f} s (setup {setup:.1f} s; {n_patches} distinct patches)"
    )
    print(
        f"throughput: {n * steps / elapsed:,.0f} image-steps/s, {n / elapsed:.2f} images/s, "
        f"{pairs / elapsed / 1e6:,.0f} M patch pairs/s"
    )
    if (n, steps) != (FULL_N, FULL_STEPS):
        print(f"extrapolated to {FULL_N} images x {FULL_STEPS} DDPM steps: {full:,.0f} s")


if __name__ == "__main__":
    main()
