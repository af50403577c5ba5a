"""The whole training step as one compiled function: the same maths as `training.EagerStep`.

Forward, backward (`torch.func.grad_and_value` of a `functional_call`), AdamW (decoupled weight
decay, Loshchilov & Hutter 2019, exactly as `torch.optim.AdamW`'s foreach path computes it),
OneCycleLR's learning rate *and* its cycled beta1 (read from a table precomputed for every step,
indexed by a 1-element step tensor, since a 0-d index breaks compilation), and the EMA
(`AveragedModel` with `get_ema_multi_avg_fn`: a copy on the first update, a lerp afterwards).
Inductor fuses the elementwise optimiser into a few kernels and removes the per-op dispatch that
dominates these tiny steps. The step updates, in place, the very tensors the live `model`,
`AdamW` and `AveragedModel` hold, so checkpoints and resumes are unchanged; `sync` brings the
scalar state (step counts, scheduler, EMA count) up to date before a checkpoint or log.
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from mosaicdiff.fast.inductor import configure_inductor
from mosaicdiff.models.patchnet import _tokens_matmul, top1_weights, unpatchify

# Columns of the per-step table.
LR, BETA1, STEP_SIZE, BC2_SQRT, DECAY, EMA_W = range(6)


def one_cycle_tables(sched, n_steps: int) -> tuple[list[float], list[float]]:
    """lr and beta1 that `sched` (a fresh `OneCycleLR`, cos annealing, two phases) sets for
    `last_epoch` = 0 .. n_steps: the same formula as `OneCycleLR.get_lr`, without stepping it."""
    group = sched.optimizer.param_groups[0]
    lrs, moms = [], []
    for step in range(n_steps + 1):
        start = 0.0
        for i, phase in enumerate(sched._schedule_phases):
            end = phase["end_step"]
            if step <= end or i == len(sched._schedule_phases) - 1:
                pct = (step - start) / (end - start)
                lrs.append(
                    sched._anneal_func(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                )
                moms.append(
                    sched._anneal_func(
                        group[phase["start_momentum"]], group[phase["end_momentum"]], pct
                    )
                )
                break
            start = end
    return lrs, moms


def step_table(sched, n_steps: int, ema_decay: float) -> torch.Tensor:
    """(n_steps, 6) float32: for optimiser step i (0-based) the lr, beta1, AdamW's step size
    lr / (1 - beta1^(i+1)), sqrt(1 - beta2^(i+1)), the decay factor 1 - lr wd and the EMA weight
    (1 on the first update, which copies, then 1 - decay), each computed in float64 as eager
    AdamW does."""
    group = sched.optimizer.param_groups[0]
    beta2, wd = group["betas"][1], group["weight_decay"]
    lrs, moms = one_cycle_tables(sched, n_steps)
    rows = []
    for i in range(n_steps):
        lr, b1 = lrs[i], moms[i]
        rows.append(
            [
                lr,
                b1,
                lr / (1 - b1 ** (i + 1)),
                (1 - beta2 ** (i + 1)) ** 0.5,
                1 - lr * wd,
                1.0 if i == 0 else 1 - ema_decay,
            ]
        )
    return torch.tensor(rows, dtype=torch.float64).float()


class BroadcastAttentionNet(nn.Module):
    """`PatchNet.forward` for attn, identity and top1 with the per-sample N x N attention
    products written as broadcast sums, which Inductor fuses with the softmax (or top1's
    straight-through Gumbel-softmax, `top1_weights`, with the same noise) and their
    backward: the `scaled_dot_product_attention` kernel and batched 4 x 32 GEMMs are slow for
    N = 4 on a CPU. The same maths; parameters are the wrapped model's, under the prefix
    "net."."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor, gumbel=None) -> torch.Tensor:
        net = self.net
        h = net.hidden(x, t)  # (S, B, N, d)
        q, k, v = net.qkv(h)
        logits = (q[..., :, None, :] * k[..., None, :, :]).sum(-1) / math.sqrt(net.cfg.hidden)
        if net.cfg.arch == "top1":  # as `PatchNet.attention` in training mode
            a = top1_weights(logits, net.cfg.gumbel_tau, gumbel)
        else:
            a = logits.softmax(-1)  # (S, B, N, N)
        h = h + (a[..., None] * v[..., None, :, :]).sum(-2)
        y = _tokens_matmul(h, net.w_out) + net.token_bias()[:, None, None]  # (S, B, N, C p p)
        return unpatchify(y, net.cfg.patch, net.image_shape)


class CompiledStep:
    """Drop-in for `training.EagerStep`: `step(loss_sum, perm, t, eps, gumbel=None)` or
    `step.epoch(...)`, then `sync()`.

    Weights, both AdamW moments and the EMA live in four flat buffers while training (one fused
    optimiser kernel, few compiled-function inputs to guard); `sync` copies them back into the
    live model, AdamW and AveragedModel, which stay the checkpoint format.
    """

    compiled = True

    def __init__(self, model, ema, opt, sched, schedule, x_data, tc):
        configure_inductor()
        self.model, self.ema, self.opt, self.sched = model, ema, opt, sched
        self.x_data = x_data
        group = opt.param_groups[0]
        named = list(model.named_parameters())
        for _, p in named:  # AdamW creates its state on the first step; do it now
            if not opt.state.get(p):
                opt.state[p] = {
                    "step": torch.tensor(0.0),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
        self.live = {
            "params": [p.detach() for _, p in named],
            "exp_avg": [opt.state[p]["exp_avg"] for _, p in named],
            "exp_avg_sq": [opt.state[p]["exp_avg_sq"] for _, p in named],
            "ema": [p.detach() for p in ema.module.parameters()],
        }
        self.layout = [(n, tuple(p.shape)) for n, p in named]
        self.flat = {k: torch.cat([v.reshape(-1) for v in vs]) for k, vs in self.live.items()}
        self.done = int(sched.last_epoch)  # optimiser steps taken so far
        self.k = torch.tensor([self.done], device=x_data.device)
        self.table = step_table(sched, sched.total_steps, tc.ema_decay).to(x_data.device)
        if model.cfg.arch in ("attn", "identity", "top1"):
            net, prefix = BroadcastAttentionNet(model), "net."
        else:  # cnn has no attention
            net, prefix = model, ""
        fn = partial(
            _train_step,
            model=net,
            prefix=prefix,
            layout=self.layout,
            schedule=schedule,
            weighting=tc.loss_weighting,
            beta2=group["betas"][1],
            adam_eps=group["eps"],
        )
        self.fn = torch.compile(fn, fullgraph=True, dynamic=False)
        self.graph: EpochGraph | None | bool = None  # False: capture failed, no graphs

    def __call__(self, loss_sum, perm, t, eps, gumbel=None) -> None:
        """As `training.EagerStep`: a step on one batch's draws, adding (S,) losses."""
        self._run(self.flat, self.k, loss_sum, perm, t, eps, gumbel)
        self.done += 1

    def _run(self, f, k, loss_sum, perm, t, eps, gumbel=None) -> None:
        """One step on the flat state f and step counter k (the live ones, or copies)."""
        self.fn(
            f["params"], f["exp_avg"], f["exp_avg_sq"], f["ema"], k, self.table, self.x_data,
            loss_sum, perm, t, eps, gumbel,
        )  # fmt: skip

    def epoch(self, draws: tuple, loss_sum, batch: int) -> None:
        """All of an epoch's steps (`training.epoch_steps`); on a GPU, one CUDA graph replay."""
        from mosaicdiff.training import epoch_steps

        graph = self._graph(draws, batch) if draws[0].is_cuda else None
        if graph is None:
            epoch_steps(self, draws, loss_sum, batch)
            return
        graph.replay(draws, loss_sum)
        self.done += -(-draws[0].shape[1] // batch)

    def _graph(self, draws: tuple, batch: int) -> EpochGraph | None:
        """The CUDA graph of an epoch of this shape, captured on first use; None for good once
        a capture has failed."""
        if self.graph is None or (self.graph and self.graph.shape != tuple(draws[0].shape)):
            try:
                self.graph = EpochGraph(self, draws, batch)
            except RuntimeError as e:  # a capture that fails leaves the state untouched
                warnings.warn(f"CUDA graph capture failed ({e}); stepping one by one", stacklevel=3)
                self.graph = False
        return self.graph or None

    def sync(self) -> None:
        """Write the state into the live model, AdamW, OneCycleLR and AveragedModel."""
        k = self.done
        if k == 0:
            return
        for kind, tensors in self.live.items():
            views = unflatten(self.flat[kind], self.layout)
            torch._foreach_copy_(tensors, list(views.values()))
        for p in self.model.parameters():
            self.opt.state[p]["step"].fill_(float(k))
        self.ema.n_averaged.fill_(k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.sched.last_epoch = k - 1
            self.sched.step()  # sets the group's lr and betas for step k, as eager would
        self.sched._step_count = k + 1


class EpochGraph:
    """A whole epoch of compiled steps captured as one CUDA graph, replayed every epoch.

    On a GPU these steps are tiny: launching their kernels one by one costs more than running
    them. The graph reads the epoch's draws from static buffers (`replay` copies each epoch's
    in) and updates the step's flat state in place, exactly as the steps run one by one would.
    Capturing needs the kernels compiled and warmed up first: that runs on copies of the state,
    with the CUDA random state put back, so the training itself is untouched.
    """

    def __init__(self, step: CompiledStep, draws: tuple, batch: int):
        from mosaicdiff.training import epoch_steps

        perm = draws[0]
        self.shape = tuple(perm.shape)
        self.draws = tuple(d.clone() for d in draws)
        self.loss = torch.zeros(perm.shape[0], device=perm.device)

        def steps(flat, k, loss):
            epoch_steps(partial(step._run, flat, k), self.draws, loss, batch)

        rng = torch.cuda.get_rng_state(perm.device)
        side = torch.cuda.Stream(perm.device)
        side.wait_stream(torch.cuda.current_stream(perm.device))
        with torch.cuda.stream(side):
            copies = {kind: f.clone() for kind, f in step.flat.items()}
            steps(copies, step.k.clone(), self.loss.clone())
        torch.cuda.current_stream(perm.device).wait_stream(side)
        torch.cuda.set_rng_state(rng, perm.device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            steps(step.flat, step.k, self.loss)

    def replay(self, draws: tuple, loss_sum) -> None:
        for static, d in zip(self.draws, draws, strict=True):
            static.copy_(d)
        self.loss.zero_()
        self.graph.replay()
        loss_sum.add_(self.loss)


def unflatten(flat: torch.Tensor, layout) -> dict[str, torch.Tensor]:
    """Views of a flat buffer as named tensors of the given shapes."""
    sizes = [math.prod(shape) for _, shape in layout]
    parts = flat.split(sizes)
    return {n: v.view(shape) for (n, shape), v in zip(layout, parts, strict=True)}


def _train_step(
    params,
    exp_avg,
    exp_avg_sq,
    ema,
    k,
    table,
    x_data,
    loss_sum,
    perm,
    t,
    eps,
    gumbel,
    *,
    model,
    prefix,
    layout,
    schedule,
    weighting,
    beta2,
    adam_eps,
):
    """One optimiser step on flat buffers, updating params, moments, EMA, k, loss_sum in place."""

    def loss_fn(flat):
        weights = {prefix + n: w for n, w in unflatten(flat, layout).items()}
        net = partial(functional_call, model, weights)
        x0 = x_data[perm]  # (S, B, C, H, W)
        given = {} if gumbel is None else {"gumbel": gumbel}  # top1's noise
        per_seed = schedule.seed_losses(lambda x, tt: net((x, tt), given), x0, t, eps, weighting)
        return per_seed.sum(), per_seed

    g, (_, per_seed) = grad_and_value(loss_fn, has_aux=True)(params)
    row = table.index_select(0, k)[0]  # (6,)
    # AdamW as torch.optim's foreach path: decoupled decay, moments, bias-corrected step.
    params.mul_(row[DECAY])
    exp_avg.lerp_(g, 1 - row[BETA1])
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = exp_avg_sq.sqrt() / row[BC2_SQRT] + adam_eps
    params.sub_(row[STEP_SIZE] * exp_avg / denom)
    ema.lerp_(params, row[EMA_W])
    loss_sum.add_(per_seed.detach())
    k.add_(1)
