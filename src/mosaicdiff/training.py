"""Training: one readable `train()` for S seeds of one architecture at once (App. B of the paper).

Per optimiser step: a batch of 64 per seed, t uniform in [0, T), the (1 - alpha_bar_t)-weighted
epsilon MSE, AdamW (lr 1e-3, weight decay 1e-5) under OneCycleLR over the whole run, then an EMA
of the weights (decay 0.9999) through `torch.optim.swa_utils`. Every seed has its own generator
for its initialisation and its data order, timesteps and noise (and top1's Gumbel noise),
drawn once per epoch, so a seed's run does not depend on which other seeds train beside it.
Checkpoints hold everything a resume needs (weights, EMA, optimiser, schedule, RNG states) and
are taken at epoch ends; a resumed run equals an uninterrupted one.

Two interchangeable step functions compute the same maths: `EagerStep` (the reference above,
op by op) and `fast.train_step.CompiledStep` (forward, backward, AdamW, OneCycle and EMA as one
`torch.compile`d function, equal to float tolerance; on a GPU each epoch's steps replay as one
CUDA graph). `train` picks the compiled one when the run is long enough to repay its
compilation (`use_compiled`), or as `MOSAICDIFF_COMPILE=0/1` or its `compile` argument says.
"""

from __future__ import annotations

import math
import os
import time
from functools import partial
from pathlib import Path

import torch
from torch.optim import AdamW
from torch.optim.lr_scheduler import OneCycleLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from mosaicdiff.config import RunConfig, TrainConfig, custom_arch
from mosaicdiff.config_io import to_dict
from mosaicdiff.data import load_dataset
from mosaicdiff.diffusion import Schedule
from mosaicdiff.errors import UserError, check
from mosaicdiff.models import build_model
from mosaicdiff.own_code import short
from mosaicdiff.runs import RunDir, check_fingerprints, fingerprints, model_state

# Compiling the fused step costs ~COMPILE_S seconds once per process (cold cache) and saves at
# least SAVED_S_PER_MODEL_STEP per model-step (1 seed: ~3 ms; 8 seeds: ~0.7-0.8 ms), measured
# by `python -m benchmarks` on the 2-core CPU; on a GPU it saves more (one CUDA graph an epoch
# instead of hundreds of kernel launches a step). Shorter runs train eagerly.
COMPILE_S = 30.0
SAVED_S_PER_MODEL_STEP = 0.7e-3
# Below this many samples per step (seeds x batch) the paper's networks train on one thread: a
# second only adds synchronisation, and thrashes when anything else loads the machine. Measured
# on 2 cores, compiled: cnn x1 4,000 model-steps/s on one thread, 2,200 on two; from 8 seeds
# (512 samples) two threads win (cnn 12,100 vs 9,800, top1 4,800 vs 4,200).
ONE_THREAD_BELOW = 512


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; checkpoints already saved are kept."""


def data_seed(seed: int) -> int:
    """The data stream's seed, distinct from the initialisation seed `seed`."""
    return 1_000_003 * (seed + 1)


def draw_epoch(g: torch.Generator, n: int, T: int, shape: tuple, gumbel=None) -> tuple:
    """One seed's randomness for one epoch: data order (N,), timesteps (N,), noise (N, C, H, W),
    and with `gumbel` (top1's `gumbel_shape`) the Gumbel noise of its attention (N, *gumbel)."""
    draws = (
        torch.randperm(n, generator=g),
        torch.randint(T, (n,), generator=g),
        torch.randn((n, *shape), generator=g),
    )
    if gumbel is None:
        return draws
    return (*draws, -torch.empty((n, *gumbel)).exponential_(generator=g).log())


def ema_note(tc: TrainConfig, n_images: int) -> str | None:
    """A warning when the EMA, which is what gets sampled, averages over more steps than the run
    takes: its weights then keep more than e^-3 (5 %) of the initial, untrained ones."""
    total = tc.epochs * math.ceil(n_images / tc.batch_size)
    horizon = 1 / (1 - tc.ema_decay)  # steps
    fits = next((d for d in (0.9999, 0.999, 0.995, 0.99, 0.9) if 3 / (1 - d) <= total), 0.0)
    if 3 * horizon <= total or tc.ema_decay <= fits:
        return None
    fix = f"--set train.ema_decay={fits}" if fits else "--set train.ema_decay=0 (no average)"
    kept = tc.ema_decay ** max(total - 1, 0)  # the first update copies the weights
    return (
        f"train.ema_decay={tc.ema_decay} averages the weights over about {horizon:,.0f} steps "
        f"and this run takes {total:,} step{'s' * (total != 1)}, so the EMA weights that are "
        f"sampled still hold {100 * kept:.0f}% of the first step's, barely trained ones; a run "
        f"this short wants {fix}"
    )


def use_compiled(
    compile: bool | None, model_steps: int, device: torch.device, custom: bool = False
) -> bool:
    """Whether to train with the compiled step: `compile` if given, else $MOSAICDIFF_COMPILE
    (0/1), else when the remaining `model_steps` (steps x seeds) repay the compilation; never
    by choice for a `custom` network, whose code torch.compile may not take whole."""
    if compile is None:
        env = os.environ.get("MOSAICDIFF_COMPILE", "").strip()
        check(env in ("", "0", "1"), f"MOSAICDIFF_COMPILE={env!r} must be 0 or 1")
        compile = None if env == "" else env == "1"
    if compile is None:
        compile = not custom and model_steps * SAVED_S_PER_MODEL_STEP > COMPILE_S
    if compile:
        from mosaicdiff.fast.inductor import can_compile

        return can_compile(device)
    return compile


def epoch_steps(step, draws: tuple, loss_sum, batch: int) -> None:
    """One epoch's optimiser steps in order: batch b is columns [b batch, (b + 1) batch) of
    each of the epoch's `draws` (perm and t (S, N), eps (S, N, C, H, W), top1's Gumbel noise
    (S, N, tokens, tokens)); `step(loss_sum, *batch_draws)` adds its (S,) losses to loss_sum."""
    for lo in range(0, draws[0].shape[1], batch):
        step(loss_sum, *(d[:, lo : lo + batch] for d in draws))


def train(
    cfg: RunConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    compile: bool | None = None,
) -> RunDir:
    """Train `cfg.train.seeds` seeds of `cfg.model` into the run directory `out`.

    With `resume`, continue from the newest good checkpoint in `out` (the config must match).
    `compile` forces the compiled (True) or eager (False) step; None chooses (`use_compiled`).
    """
    use_compiled(compile, 0, torch.device("cpu"))  # a bad $MOSAICDIFF_COMPILE, before any write
    run = RunDir(out)
    existed = {p: p.stat().st_size for p in run.written_by_training() if p.exists()}
    with run.training():
        try:
            return _train(run, cfg, out, resume, progress, compile)
        except BaseException:  # a network failing on the first batch, Ctrl-C, a diverged loss
            if run.config_path not in existed and not run.checkpoints():
                run.remove_unstarted(existed)
            raise


def _train(run: RunDir, cfg: RunConfig, out, resume: bool, progress: bool, compile) -> RunDir:
    """`train`'s work, with the run's training lock held."""
    if resume:
        run.check_continues(cfg)
    elif run.exists():
        check(run.checkpoints() == [], f"{out} already holds a run; pass --resume to continue it")
        # stopped before its first checkpoint (a bad lr, Ctrl-C): nothing to continue, so it
        # starts afresh with these settings
        run.truncate_metrics(0)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg)

    device = torch.device(cfg.device)
    tc = cfg.train
    dataset = load_dataset(cfg.data)
    x_data = dataset.images.to(device)  # (N, C, H, W)
    n, shape = len(dataset), dataset.shape
    if note := ema_note(tc, n):
        tqdm.write(f"{out}: note: {note}")
    if tc.keep_every > tc.epochs:  # probe 63: history then found the last two, unexplained
        tqdm.write(
            f"{out}: note: train.keep_every={tc.keep_every} is beyond the run's {tc.epochs} "
            "epochs, so no checkpoint is kept for `history` beyond the last two"
        )
    schedule = Schedule.from_config(cfg.diffusion).to(device)
    model = build_model(cfg.model, shape, cfg.diffusion.T, tc.seeds).to(device)
    gumbel = getattr(model, "gumbel_shape", None)  # top1's noise, drawn per seed as eps is
    inputs = fingerprints(dataset, cfg)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay))
    opt = AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, foreach=True)
    steps_per_epoch = math.ceil(n / tc.batch_size)
    total_steps = tc.epochs * steps_per_epoch
    sched = OneCycleLR(opt, max_lr=tc.lr, total_steps=total_steps)
    gens = [torch.Generator().manual_seed(data_seed(s)) for s in tc.seeds]
    torch.manual_seed(tc.seeds[0])  # the global stream (unused here; a network of your own may)

    start_epoch = 0
    latest = run.load_latest() if resume else None
    if latest is not None:
        check_fingerprints(latest[1], inputs, cfg)
        start_epoch = restore(latest, model, ema, opt, sched, gens)
        if progress:
            tqdm.write(f"{out}: resuming from the checkpoint at epoch {start_epoch} of {tc.epochs}")
    elif resume and progress:  # --resume on a new folder, or one stopped before its first save
        tqdm.write(f"{out}: no checkpoint to resume from; starting at epoch 0")
    if resume:
        run.truncate_metrics(start_epoch)  # drop lines logged after that checkpoint

    model.train()
    remaining = (tc.epochs - start_epoch) * steps_per_epoch * len(tc.seeds)
    if use_compiled(compile, remaining, device, custom_arch(cfg.model.arch)):
        from mosaicdiff.fast.train_step import CompiledStep

        step = CompiledStep(model, ema, opt, sched, schedule, x_data, tc)
    else:
        step = EagerStep(model, ema, opt, sched, schedule, x_data, tc)
    bar = tqdm(
        total=total_steps,
        initial=start_epoch * steps_per_epoch,
        desc=f"train {short(cfg.model.arch)} x{len(tc.seeds)}{' compiled' * step.compiled}",
        disable=not progress,
        unit="step",
    )
    threads = torch.get_num_threads()
    if device.type == "cpu" and len(tc.seeds) * tc.batch_size < ONE_THREAD_BELOW:
        torch.set_num_threads(1)
    try:
        for epoch in range(start_epoch, tc.epochs):
            tick = time.perf_counter()
            draws = [draw_epoch(g, n, cfg.diffusion.T, shape, gumbel) for g in gens]
            draws = tuple(torch.stack(d).to(device) for d in zip(*draws, strict=True))
            loss_sum = torch.zeros(len(tc.seeds), device=device)
            step.epoch(draws, loss_sum, tc.batch_size)
            losses = (loss_sum / steps_per_epoch).tolist()
            if not all(math.isfinite(v) for v in losses):
                bar.close()
                saved = run.checkpoints()
                kept = f", {saved[-1]} is kept" if saved else " before its first checkpoint"
                raise TrainingDiverged(
                    f"loss became {losses} at epoch {epoch + 1}; training stopped{kept} "
                    "(try a lower train.lr)"
                )
            rate = steps_per_epoch * len(tc.seeds) / (time.perf_counter() - tick)
            step.sync()
            run.log(
                {
                    "epoch": epoch + 1,
                    "loss": losses,
                    "lr": sched.get_last_lr()[0],
                    "model_steps_per_s": rate,
                }
            )
            bar.update(steps_per_epoch)
            bar.set_postfix(loss=f"{sum(losses) / len(losses):.4f}", model_steps_s=f"{rate:,.0f}")
            done = epoch + 1
            kept = tc.keep_every and done % tc.keep_every == 0
            if done % tc.checkpoint_every == 0 or done == tc.epochs or kept:
                save(run, cfg, epoch + 1, steps_per_epoch, model, ema, opt, sched, gens, inputs)
    finally:
        torch.set_num_threads(threads)
    bar.close()
    return run


class EagerStep:
    """One optimiser step op by op: the reference the compiled step is tested against."""

    compiled = False

    def __init__(self, model, ema, opt, sched, schedule, x_data, tc):
        self.model, self.ema, self.opt, self.sched = model, ema, opt, sched
        self.schedule, self.x_data, self.weighting = schedule, x_data, tc.loss_weighting

    def __call__(self, loss_sum, perm, t, eps, gumbel=None) -> None:
        """perm, t: (S, B) data indices and timesteps; eps (S, B, C, H, W); gumbel: top1's
        (S, B, N, N) Gumbel noise; adds (S,) losses to loss_sum."""
        x0 = self.x_data[perm]  # (S, B, C, H, W)
        model = self.model if gumbel is None else partial(self.model, gumbel=gumbel)
        per_seed = self.schedule.seed_losses(model, x0, t, eps, self.weighting)  # (S,)
        self.opt.zero_grad(set_to_none=True)
        per_seed.sum().backward()
        self.opt.step()
        self.sched.step()
        self.ema.update_parameters(self.model)
        loss_sum += per_seed.detach()

    def epoch(self, draws: tuple, loss_sum, batch: int) -> None:
        epoch_steps(self, draws, loss_sum, batch)

    def sync(self) -> None:
        """The live objects are always current."""


def save(run, cfg, epoch, steps_per_epoch, model, ema, opt, sched, gens, inputs) -> None:
    opt_state = opt.state_dict()
    tensors = {**model_state(model, "model."), **model_state(ema.module, "ema.")}
    for i, state in opt_state["state"].items():
        for k, v in state.items():
            tensors[f"opt.{i}.{k}"] = v
    for i, g in enumerate(gens):
        tensors[f"rng.data.{i}"] = g.get_state()
    tensors["rng.global"] = torch.get_rng_state()
    device = next(model.parameters()).device
    if device.type == "cuda":  # a network of your own may draw from the GPU's stream
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    tensors["ema_n_averaged"] = ema.n_averaged
    meta = {
        "epoch": epoch,
        "step": epoch * steps_per_epoch,
        "config": to_dict(cfg),
        "optimizer_param_groups": opt_state["param_groups"],
        "lr_schedule": sched.state_dict(),
        **inputs,
    }
    run.save_checkpoint(epoch, tensors, meta, cfg.train.keep_every)


def restore(latest, model, ema, opt, sched, gens) -> int:
    """Load a checkpoint into the live training objects; return the epoch it ends."""
    tensors, meta = latest

    def part(prefix):
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    model.load_state_dict(part("model."))
    ema.module.load_state_dict(part("ema."))
    ema.n_averaged.copy_(tensors["ema_n_averaged"])
    state: dict[int, dict] = {}
    for k, v in part("opt.").items():
        i, name = k.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    groups = meta["optimizer_param_groups"]
    for g in groups:
        g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
    sched.load_state_dict(meta["lr_schedule"])
    for i, g in enumerate(gens):
        g.set_state(tensors[f"rng.data.{i}"])
    torch.set_rng_state(tensors["rng.global"])
    device = next(model.parameters()).device
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return int(meta["epoch"])
