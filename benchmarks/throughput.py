"""Training and sampling throughput of every architecture: mosaicdiff vs the plain way.

In one run on this machine: training model-steps/s (the real `training.train`, eager and
compiled, 1 seed and a group of seeds, epoch draws included; compilation timed separately) and
DDPM sampling sample-steps/s (`fast.sampling.FastDDPM`: compiled and folded, or its native C++
loop; its default counter-based noise and, in a full run, torch's generator stream) against
`benchmarks/plain.py`, plus the machine's dense-matmul FLOP/s as the ceiling. Prints a table of
ratios and writes JSON. Before timing, checks that the plain and fast paths compute the same
thing: network outputs, and full 1,000-step samples from the same generator.

Run: python -m benchmarks [--quick] [--json PATH] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks import PAPER_ARCHS as ARCHS
from benchmarks import check_counts, checked_archs
from mosaicdiff.allocator import hold_freed_memory
from mosaicdiff.cli import Parser

# A 1-minute load average above this as the run begins: other work shares the cores.
BUSY_LOAD = 1.0
D, N_TOK, P = 32, 4, 12  # hidden width, tokens, values per token of the paper's networks


def flops(arch: str) -> dict[str, float]:
    """Matmul FLOPs per sample: training (forward + backward ~ 3x forward, time embedding per
    sample), plain sampling (time embedding once per batch) and folded sampling."""
    io = 2 * N_TOK * P * D * 2  # first conv and transpose conv
    temb = 2 * D * D
    attn = {"cnn": 0, "identity": 2 * 2 * N_TOK * N_TOK * D}.get(
        arch, 3 * 2 * N_TOK * D * D + 2 * 2 * N_TOK * N_TOK * D
    )
    # Folded (`fast/folding.py`): the N x N mixing runs on the P output values, not on d
    # features, and top1's is a gather (no multiply-adds).
    logits, mix = 2 * N_TOK * N_TOK * D, 0 if arch == "top1" else 2 * N_TOK**2 * P
    folded = {"cnn": io, "identity": io + logits + mix}.get(
        arch, io + 2 * N_TOK * D * D + logits + 2 * N_TOK * D * P + mix
    )
    return {"train": 3 * (io + temb + attn), "sample": io + attn, "sample_folded": folded}


def best_time(fn, reps: int, device: str = "cpu") -> float:
    """The best wall time of `reps` calls of fn (waiting for the GPU's work, on a GPU)."""
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = math.inf
    for _ in range(reps):
        sync()
        tick = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - tick)
    return best


def matmul_ceiling(torch, reps: int, device: str) -> float:
    """Best dense float32 matmul FLOP/s: the model's (40000 x 32) @ (32 x 32) shape and a
    square one (4096 on a GPU)."""
    rates = []
    gpu = device.startswith("cuda")
    side, macs = (4096, 2e10) if gpu else (1024, 2e8)  # multiply-adds timed per rep
    for m, k, n in ((40_000, 32, 32), (side, side, side)):
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        inner = max(1, int(macs // (m * k * n)))
        a @ b
        t = best_time(lambda a=a, b=b, inner=inner: [a @ b for _ in range(inner)], reps, device)
        rates.append(2 * m * k * n * inner / t)
    return max(rates)


def train_rate(cfg, compile: bool) -> tuple[float, float, list[float]]:
    """(best model-steps/s over epochs after the first, seconds of the first epoch beyond a
    steady one = the compile time, every epoch's model-steps/s) of `training.train` on `cfg`."""
    from mosaicdiff.runs import RunDir
    from mosaicdiff.training import train

    out = Path(tempfile.mkdtemp(prefix="mosaicdiff-bench-"))
    try:
        tick = time.perf_counter()
        train(cfg, out / "run", progress=False, compile=compile)
        wall = time.perf_counter() - tick
        rows = RunDir(out / "run").read_metrics()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rate = max(r["model_steps_per_s"] for r in rows[1:])
    model_steps = sum(len(r["loss"]) for r in rows) * _steps_per_epoch(cfg)  # seeds x steps
    return rate, max(0.0, wall - model_steps / rate), [r["model_steps_per_s"] for r in rows]


def _steps_per_epoch(cfg) -> int:
    return math.ceil(cfg.data.n_images / cfg.train.batch_size)


def bench_training(arch, quick: bool, group: int, device: str) -> dict:
    from benchmarks.plain import PlainTrainer
    from mosaicdiff.config import ModelConfig, RunConfig, TrainConfig
    from mosaicdiff.data import load_dataset

    epochs = 8  # the best epoch after the first: with 3 the cnn x8 rate read ~40 % low
    # The EMA's decay costs nothing (one lerp either way); one that fits 256 steps keeps
    # `train`'s note on too-short runs out of the table.
    short = {"epochs": epochs, "checkpoint_every": 10**6, "ema_decay": 0.9}
    cfg1 = RunConfig(model=ModelConfig(arch=arch), train=TrainConfig(**short), device=device)
    images = load_dataset(cfg1.data).images
    plain = PlainTrainer(arch, images, total_steps=10**6, device=device)
    plain.train_steps(10)
    n = 64 if quick else 256
    plain_rate = n / best_time(lambda: plain.train_steps(n), 3, device)
    res = {"plain_steps_per_s": plain_rate}
    # Each epoch's rate is kept too: the best hides a run whose every epoch was slow.
    res["eager_1"], _, res["epoch_rates_eager_1"] = train_rate(cfg1, False)
    if not quick or arch == "cnn":  # --quick: one compile per architecture, cnn aside
        res["compiled_1"], res["compile_s_1"], res["epoch_rates_1"] = train_rate(cfg1, True)
    cfg_g = RunConfig(
        model=ModelConfig(arch=arch),
        train=TrainConfig(**short, seeds=tuple(range(group))),
        device=device,
    )
    rate, res[f"compile_s_{group}"], res[f"epoch_rates_{group}"] = train_rate(cfg_g, True)
    res[f"compiled_{group}"] = rate
    return res


def bench_sampling(arch, torch, quick: bool, group: int, device: str) -> dict:
    from benchmarks.plain import from_patchnet, plain_sample
    from mosaicdiff.config import ModelConfig
    from mosaicdiff.diffusion import Schedule
    from mosaicdiff.fast.folding import FoldedNet
    from mosaicdiff.fast.sampling import FastDDPM
    from mosaicdiff.models import build_model
    from mosaicdiff.sampling import ddpm_sample

    cpu = device == "cpu"
    schedule = Schedule.linear()
    model = build_model(ModelConfig(arch=arch), (3, 4, 4), 1000, seeds=(0,)).eval().to(device)
    model.requires_grad_(False)
    net = FoldedNet(model)
    plain = from_patchnet(model).to(device)

    # Same maths: network outputs, then whole 1,000-step samples from the same generator.
    x = torch.randn(256, 3, 4, 4, device=device)
    t = torch.tensor([500], device=device)
    with torch.no_grad():
        out_plain = plain(x, t.expand(256))
    diff_net = (net(x, t) - out_plain).abs().max().item()
    # The plain way draws diffusers' torch.randn noise: the fast path with noise="torch" (the
    # CPU only; on a GPU the reference with torch noise) must match it; with its default
    # counter-based noise, the fast path must match the reference sampler.
    x_T = torch.randn(8, 3, 4, 4, device=device)
    g = lambda: torch.Generator(device).manual_seed(0)  # noqa: E731
    s_plain = plain_sample(plain, x_T, g())
    if cpu:
        s_torch = FastDDPM(net, schedule, compile=False, noise="torch")(x_T, g())
    else:
        s_torch = ddpm_sample(model.as_denoiser(), x_T, g(), schedule, noise="torch")
    s_ref = ddpm_sample(model.as_denoiser(), x_T, g(), schedule)
    s_fast = FastDDPM(net, schedule, compile=False)(x_T, g())
    scale = s_ref.abs().max().item()  # untrained networks make huge samples: compare relative
    res = {
        "max_abs_diff_network_plain_vs_folded": diff_net,
        "max_rel_diff_samples_plain_vs_fast": (s_plain - s_torch).abs().max().item() / scale,
        "max_rel_diff_samples_reference_vs_fast": (s_ref - s_fast).abs().max().item() / scale,
    }
    native = FastDDPM(net, schedule, compile=True)  # the native C++ loop, where it runs
    res["native"] = native.native
    if native.native:
        s_native = native(x_T, g())
        diff = (s_ref - s_native).abs().max().item()
        res["max_rel_diff_samples_reference_vs_native"] = diff / scale

    b_plain, k_plain = (2_000, 4) if quick and cpu else (10_000 if cpu else 100_000, 10)
    x_T = torch.randn(b_plain, 3, 4, 4, device=device)
    g = torch.Generator(device).manual_seed(0)
    plain_sample(plain, x_T, g, 1)
    reps = 2 if quick else 3
    t_plain = best_time(lambda: plain_sample(plain, x_T, g, k_plain), reps, device)
    res["plain_sample_steps_per_s"] = b_plain * k_plain / t_plain

    b_fast, k_fast = (20_000, 10) if quick and cpu else (100_000, 20 if cpu else 100)
    x_T = torch.randn(b_fast, 3, 4, 4, device=device)
    for noise in ("threefry",) if quick or not cpu else ("threefry", "torch"):
        fast = FastDDPM(net, schedule, compile=True, noise=noise)
        tick = time.perf_counter()
        fast(x_T, g, 1)
        suffix = "" if noise == "threefry" else "_torch_noise"
        res["compile_s" + suffix] = time.perf_counter() - tick
        t_fast = best_time(lambda fast=fast: fast(x_T, g, k_fast), reps, device)
        res["fast_sample_steps_per_s" + suffix] = b_fast * k_fast / t_fast
    if not quick:  # a group of seeds sampled together, the same samples in all
        model = build_model(ModelConfig(arch=arch), (3, 4, 4), 1000, seeds=tuple(range(group)))
        model = model.eval().to(device).requires_grad_(False)
        fast = FastDDPM(FoldedNet(model), schedule, compile=True)
        x_T = x_T[: b_fast // group * group]
        fast(x_T, g, 1)
        t_fast = best_time(lambda: fast(x_T, g, k_fast), reps, device)
        res[f"fast_sample_steps_per_s_{group}_seeds"] = x_T.shape[0] * k_fast / t_fast
    return res


def main(argv=None) -> int:
    p = Parser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="short timings (under 2 minutes)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--group", type=int, default=8, help="seeds trained (and, full run, sampled) at once"
    )
    p.add_argument("--archs", default=",".join(ARCHS), help="comma-separated architectures")
    p.add_argument("--skip", choices=["train", "sample"], help="skip one half")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = p.parse_args(argv)
    archs = checked_archs(p, args.archs)
    check_counts(p, args, ("group", "threads"))
    if args.skip != "sample" and importlib.util.find_spec("diffusers") is None:
        p.error(
            "the plain baseline samples with diffusers' DDPMScheduler, which is not installed: "
            "pip install -e '.[test]' (or --skip sample)"
        )
    # A persistent, benchmark-only inductor cache: reruns skip most of the compilation.
    os.environ.setdefault(
        "TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "mosaicdiff" / "inductor-bench")
    )
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    held = hold_freed_memory()  # for the plain and our code alike
    started = time.perf_counter()
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        p.error(f"--device {args.device}: no such device here; use cpu")
    # Measured first and last: a CPU still clocking up, or busy with the previous command, gave
    # 112 GFLOP/s at the start of one run on a host that does 200 warm. A ceiling is a maximum.
    ceiling_start = matmul_ceiling(torch, 3, args.device)
    results = {
        "threads": torch.get_num_threads(),
        "malloc_thresholds_fixed": held,
        "load_average_1min": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "device": args.device
        if args.device == "cpu"
        else f"{args.device} ({torch.cuda.get_device_name(args.device)})",
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the native loop's vectors
        "quick": args.quick,
        "group": args.group,
        "matmul_ceiling_flops_start": ceiling_start,
        "archs": {},
    }
    for arch in archs:
        r = {"flops_per_sample": flops(arch)}
        if args.skip != "train":
            r["train"] = bench_training(arch, args.quick, args.group, args.device)
        if args.skip != "sample":
            r["sample"] = bench_sampling(arch, torch, args.quick, args.group, args.device)
        results["archs"][arch] = r
        print(f"[{time.perf_counter() - started:.0f}s] {arch} done", flush=True)
    results["matmul_ceiling_flops_end"] = matmul_ceiling(torch, 3, args.device)
    results["matmul_ceiling_flops"] = max(ceiling_start, results["matmul_ceiling_flops_end"])
    results["wall_s"] = time.perf_counter() - started
    print(report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def report(res: dict) -> str:
    ceil, g = res["matmul_ceiling_flops"], res["group"]
    lines = [
        f"device={res.get('device', 'cpu')} "
        f"threads={res['threads']} of {res['cpus']} cpus (load {res['load_average_1min']:.1f}) "
        f"torch={res['torch']} ({res.get('cpu_capability', '?')}) quick={res['quick']} "
        f"malloc thresholds {'fixed' if res.get('malloc_thresholds_fixed') else 'default'} "
        f"matmul ceiling {ceil / 1e9:.0f} GFLOP/s (best of "
        f"{res.get('matmul_ceiling_flops_start', ceil) / 1e9:.0f} at the start, "
        f"{res.get('matmul_ceiling_flops_end', ceil) / 1e9:.0f} at the end), "
        f"wall {res.get('wall_s', 0):.0f} s",
    ]
    if any("train" in r for r in res["archs"].values()):
        lines += [
            "",
            "training, model-steps/s (batch 64; ratio = ours / plain; % = achieved / ceiling)",
            f"{'arch':9}{'plain':>8}{'eager 1':>9}{'comp 1':>8}{f'comp {g}':>9}"
            f"{'x 1':>7}{f'x {g}':>7}{'% ceil':>8}{'compile s':>11}",
        ]
        for arch, r in res["archs"].items():
            if "train" not in r:
                continue
            t = r["train"]
            plain, c1, cg = (
                t["plain_steps_per_s"],
                t.get("compiled_1", math.nan),
                t[f"compiled_{g}"],
            )
            pct = 100 * cg * 64 * r["flops_per_sample"]["train"] / ceil
            lines.append(
                f"{arch:9}{plain:8.0f}{t['eager_1']:9.0f}{c1:8.0f}{cg:9.0f}"
                f"{c1 / plain:7.1f}{cg / plain:7.1f}{pct:8.1f}"
                f"{t.get('compile_s_1', math.nan):6.0f}/{t[f'compile_s_{g}']:.0f}"
            )
    above = False
    if any("sample" in r for r in res["archs"].values()):
        lines += [
            "",
            "DDPM sampling, sample-steps/s; minutes for 1M samples x 1,000 steps",
            "(ours: counter-based Threefry noise, the default, one seed, '*' the native C++ loop; "
            "full run only: "
            f"'torch noise', torch.randn's stream; '{g} seeds', a group sampled together)",
            f"{'arch':9}{'plain':>10}{'ours':>11}{'x':>6}{'plain min':>10}{'ours min':>9}"
            f"{'% ceil':>8}{'rel diff':>12}{'torch noise min':>17}{f'{g} seeds min':>14}",
        ]
        for arch, r in res["archs"].items():
            if "sample" not in r:
                continue
            s = r["sample"]
            plain, ours = s["plain_sample_steps_per_s"], s["fast_sample_steps_per_s"]
            pct = 100 * ours * r["flops_per_sample"]["sample_folded"] / ceil
            above = above or pct > 100
            diff = max(
                s["max_rel_diff_samples_plain_vs_fast"],
                s["max_rel_diff_samples_reference_vs_fast"],
                s.get("max_rel_diff_samples_reference_vs_native", 0.0),
            )
            torch_noise = s.get("fast_sample_steps_per_s_torch_noise")
            torch_min = f"{1e9 / torch_noise / 60:.1f}" if torch_noise else "-"
            grouped = s.get(f"fast_sample_steps_per_s_{g}_seeds")
            group_min = f"{1e9 / grouped / 60:.1f}" if grouped else "-"
            name = arch + ("*" if s.get("native") else "")
            lines.append(
                f"{name:9}{plain:10.3g}{ours:11.3g}{ours / plain:6.1f}"
                f"{1e9 / plain / 60:10.1f}{1e9 / ours / 60:9.1f}{pct:8.1f}{diff:12.1e}"
                f"{torch_min:>17}{group_min:>14}"
            )
    if above:  # seen on a Zen 5 EPYC: the native loop's attn and top1 at 101-108 % of MKL's matmul
        lines.append(
            "% ceil over 100: this sampler's multiply-adds ran faster than torch's own dense "
            "matmul here, so that matmul is no ceiling for it"
        )
    if res["load_average_1min"] > BUSY_LOAD:  # probe 50: cnn's ratio was 307, 10, 249 and 33
        lines.append(
            f"note: the machine was busy as this began (load {res['load_average_1min']:.1f}): "
            "other work shared the cores, and the ratios (plain's short timings most) can be "
            "off several times; run it again on an idle machine"
        )
    return "\n".join(lines)
