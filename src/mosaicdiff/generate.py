"""Drawing samples from a trained run: N samples in R runs per seed, streamed to disk in chunks.

All samples of all runs form one index range [0, R * N); chunk j holds indices
[j m, (j + 1) m) for every seed of the group at once (m = chunk_size // S). A sample's run is
index // N. Finished chunks are skipped, so an interrupted sampling resumes where it stopped,
and memory stays bounded by the chunk size whatever the number of samples.

The noise (`chunk_start`): by default (`sample.noise="indexed"`) sample i of training seed s
draws its initial and sampler noise from Threefry keyed by (sample.seed, s) and counted by i
(`noise.Counters`), so it is the same sample whatever the chunking, the number of samples, or
the seeds trained beside s. With "threefry" or "torch" each chunk draws both from a generator of
its own, seeded by (sample.seed, j): a sample then depends on its chunk's size too.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mosaicdiff import locks
from mosaicdiff.config import RunConfig, SampleConfig, SampleNoise, stored_sample
from mosaicdiff.config_io import differences, from_dict, to_dict
from mosaicdiff.errors import UserError
from mosaicdiff.io import atomic_write_json, load_npz, read_json, save_npz
from mosaicdiff.noise import Counters, sampler_kind, seed_key
from mosaicdiff.own_code import short
from mosaicdiff.runs import LoadedRun
from mosaicdiff.sampling import sample


def chunk_seed(seed: int, chunk: int) -> int:
    return 2_654_435_761 * seed + chunk


def chunk_start(
    noise: SampleNoise, keys: torch.Tensor, lo: int, hi: int, seed: int, shape, T: int
) -> tuple[torch.Tensor, torch.Generator | Counters]:
    """x_T (S*n, *shape) of samples [lo, hi) of each of the S seeds whose Threefry keys are the
    rows of `keys` (S, 2) (`noise.seed_key`), seed by seed, and what the sampler draws the rest of
    their noise from: their `Counters` (indexed noise), or the chunk's generator seeded by
    `seed` (chunk_seed), which draws x_T first."""
    n = hi - lo
    if noise == "indexed":
        counters = Counters.of_seeds(keys, lo, n)
        return counters.initial(tuple(shape), T), counters
    g = torch.Generator(keys.device).manual_seed(seed)
    return torch.randn((len(keys) * n, *shape), generator=g, device=keys.device), g


def chunk_paths(out: Path) -> list[Path]:
    return sorted(out.glob("chunk-*.npz"))


def read_meta(out: Path, *keys: str) -> dict:
    """OUT/sample.json, refused in one line when it lacks any of `keys` (edited or damaged)."""
    path = out / "sample.json"
    meta = read_json(path)
    for key in ("n_chunks", *keys):
        if key not in meta:
            raise UserError(f"{path} is damaged (it has no {key!r}); delete {out} and sample again")
    return meta


def read_chunk(path: Path, n_seeds: int) -> dict:
    """The arrays of the chunk in `path`, if it holds what `draw_chunks` writes for `n_seeds`
    seeds: float samples (n_seeds, m, C, H, W) and integer index and run (m,)."""
    redraw = "delete it and sample again to redraw it"
    try:
        chunk = load_npz(path)
    except UserError as e:
        raise UserError(f"{e}; {redraw}") from None
    x, index, run = (chunk.get(k) for k in ("samples", "index", "run"))
    arrays = (x, index, run)
    fine = all(isinstance(a, np.ndarray) for a in arrays) and x.dtype.kind == "f"
    fine = fine and x.ndim == 5 and x.shape[0] == n_seeds
    fine = fine and all(a.dtype.kind in "iu" and a.shape == x.shape[1:2] for a in (index, run))
    if not fine:
        got = ", ".join(
            f"{k} {getattr(a, 'dtype', None)} {getattr(a, 'shape', None)}"
            for k, a in zip(("samples", "index", "run"), arrays, strict=True)
        )
        raise UserError(
            f"{path} is damaged (it holds {got}; expected float samples ({n_seeds}, m, C, H, W) "
            f"and integer index and run (m,)); {redraw}"
        )
    return chunk


def make_sampler(loaded: LoadedRun, scfg: SampleConfig):
    """`sampler(x_T, generator) -> x_0` by `scfg`, the fastest exact one available.

    For the paper's networks, DDPM runs folded in token space (`fast.sampling`), with the same
    noise from the same generator as `sampling.ddpm_sample` (torch's stream on the CPU only);
    it is compiled when the work (`worth_compiling`) repays the compilation.
    """
    model, schedule = loaded.model, loaded.schedule
    if samples_folded(model, scfg):
        from mosaicdiff.fast.folding import FoldedNet
        from mosaicdiff.fast.sampling import FastDDPM

        compiled = worth_compiling(scfg, model.n_seeds)
        fast = FastDDPM(FoldedNet(model), schedule, compiled, noise=sampler_kind(scfg.noise))
        return lambda x_T, g, progress=False: fast(x_T, g)
    denoiser = model.as_denoiser()
    return lambda x_T, g, progress=False: sample(
        denoiser,
        x_T,
        g,
        schedule,
        scfg.sampler,
        scfg.steps,
        scfg.eta,
        clip=scfg.clip_x0,
        noise=sampler_kind(scfg.noise),
        progress=progress,
    )


SAMPLE_LOCK = ".sample.lock"  # held while a process draws into a samples folder (`locks`)

# Below this many samples (over all runs and seeds) compiling the fast sampler costs more than
# it saves.
COMPILE_MIN_SAMPLES = 200_000


def worth_compiling(scfg: SampleConfig, n_seeds: int) -> bool:
    """Whether drawing `scfg`'s samples for `n_seeds` seeds repays compiling the fast sampler
    (and so whether it uses the native loop)."""
    return scfg.n_runs * scfg.n_per_run * n_seeds >= COMPILE_MIN_SAMPLES


def samples_folded(model, scfg: SampleConfig) -> bool:
    """Whether `make_sampler` samples `model` folded in token space (`fast.sampling`)."""
    from mosaicdiff.models.patchnet import PatchNet

    if not (isinstance(model, PatchNet) and scfg.sampler == "ddpm" and not scfg.clip_x0):
        return False
    if scfg.noise != "torch":
        return True
    # torch's stream: on the CPU, and split into the fast sampler's Box-Muller blocks only when
    # an image holds a multiple of 16 values (3x6x6 pairings hold 108: the reference samples)
    cpu = next(model.parameters()).device.type == "cpu"
    return cpu and math.prod(model.image_shape) % 16 == 0


def native_shape(cfg: RunConfig) -> tuple[int, int, int] | None:
    """The shape of the native loop (`fast.native`) that sampling a run of `cfg` uses, known
    before its training: None where it samples another way."""
    from mosaicdiff.data import load_dataset
    from mosaicdiff.fast import native
    from mosaicdiff.fast.folding import FoldedNet
    from mosaicdiff.fast.inductor import can_compile
    from mosaicdiff.models import build_model

    if cfg.device != "cpu" or not worth_compiling(cfg.sample, len(cfg.train.seeds)):
        return None
    if not can_compile(cfg.device):  # no C++ compiler: nothing to build
        return None
    model = build_model(cfg.model, load_dataset(cfg.data).shape, cfg.diffusion.T, cfg.train.seeds)
    if not samples_folded(model, cfg.sample):
        return None
    net = FoldedNet(model.eval().requires_grad_(False))
    supported = native.supports(net, sampler_kind(cfg.sample.noise))
    return native.shape_of(net) if supported else None


def draw_samples(
    loaded: LoadedRun, scfg: SampleConfig, name: str = "default", progress: bool = True
) -> Path:
    """Sample `loaded` by `scfg` into RUN/samples/NAME/chunk-*.npz; return that folder."""
    out = loaded.run.samples_dir(name)
    refuse_mixing(out, scfg, loaded.epoch, loaded.weights)
    s = loaded.model.n_seeds
    total = scfg.n_runs * scfg.n_per_run
    shape = loaded.dataset.shape
    check_room(out, total * s * math.prod(shape) * 4)  # float32 chunks
    sampler = make_sampler(loaded, scfg)
    device = next(loaded.model.parameters()).device
    keys = torch.stack([seed_key(scfg.seed, seed) for seed in loaded.cfg.train.seeds])
    keys, T = keys.to(device), loaded.schedule.T

    def draw(lo: int, hi: int, seed: int) -> torch.Tensor:
        x_T, source = chunk_start(scfg.noise, keys, lo, hi, seed, shape, T)
        return sampler(x_T, source, progress=progress).reshape(s, hi - lo, *shape)

    meta = {"sample": to_dict(scfg), "seeds": list(loaded.cfg.train.seeds), "epoch": loaded.epoch}
    meta["weights"] = loaded.weights
    draw_chunks(
        out,
        meta,
        draw,
        total,
        per_chunk=max(1, scfg.chunk_size // s),
        seed=scfg.seed,
        n_per_run=scfg.n_per_run,
        n_seeds=s,
        desc=f"sample {short(loaded.cfg.model.arch)} x{s}",
        progress=progress,
    )
    return out


def check_room(out: Path, size: int, fewer: str = "--runs, --per-run") -> None:
    """Refuse to draw samples of `size` bytes in all into OUT (whose chunks so far count) when
    its disk has not that much free: a typo in the options `fewer` names would otherwise write
    chunks until the disk is full."""
    import shutil

    have = sum(p.stat().st_size for p in chunk_paths(out))
    near = next(p for p in (out, *out.parents) if p.exists())  # OUT itself may not exist yet
    free = shutil.disk_usage(near).free
    if size - have > free:
        raise UserError(
            f"these samples need {size / 1e9:,.1f} GB in {out}"
            f"{f' ({have / 1e9:,.1f} GB drawn)' if have else ''}, but {free / 1e9:,.1f} GB are "
            f"free there; draw fewer ({fewer})"
        )


def refuse_mixing(out: Path, scfg: SampleConfig, epoch: int, weights: str) -> None:
    """Refuse to add samples drawn by `scfg` from the checkpoint of `epoch` (its `weights`) to
    the folder OUT when it holds others: drawn with other settings, from a run trained on since
    (old chunks must not mix with new), or with the other weights (raw or EMA)."""
    if not (out / "sample.json").is_file():
        return
    stored = read_meta(out, "sample")
    old = to_dict(from_dict(SampleConfig, stored_sample(stored["sample"])))
    was = {"sample": old, "epoch": stored.get("epoch", epoch)}
    was["weights"] = stored.get("weights", "ema")  # drawn before it was recorded: the EMA's
    refuse_other_settings(out, was, {"sample": to_dict(scfg), "epoch": epoch, "weights": weights})


def refuse_other_settings(out: Path, old: dict, new: dict, other: str = "--name") -> None:
    """Refuse to add to the samples in OUT, drawn with `old`, ones drawn with `new` settings
    (a folder that holds no chunk yet, left by a draw that failed at once, takes the new)."""
    changed = differences(old, new)
    if changed and chunk_paths(out):
        raise UserError(
            f"{out} holds samples drawn with other settings ({'; '.join(changed)}); "
            f"choose another {other} or delete that folder"
        )


def draw_chunks(
    out: Path,
    meta: dict,
    draw,
    total: int,
    per_chunk: int,
    seed: int,
    n_per_run: int,
    n_seeds: int = 1,
    desc: str = "sample",
    progress: bool = True,
) -> None:
    """Write OUT/sample.json (`meta` and the chunking), then OUT/chunk-J.npz for every chunk
    not written yet: the samples of indices [lo, hi) = [J m, (J + 1) m) of `total` (m =
    `per_chunk`), drawn by `draw(lo, hi, chunk_seed(seed, J)) -> (n_seeds, hi - lo, C, H, W)`
    (`chunk_start`): a chunk does not depend on which chunks ran before it. Another process
    drawing into `out` at the same time is refused (OUT/.sample.lock)."""
    with locks.held(out / SAMPLE_LOCK, "sampled"):
        n_chunks = math.ceil(total / per_chunk)
        atomic_write_json(
            out / "sample.json", {**meta, "n_chunks": n_chunks, "per_chunk": per_chunk}
        )
        done = {p.name for p in chunk_paths(out)}
        bar = tqdm(total=total * n_seeds, desc=desc, unit="img", disable=not progress)
        for j in range(n_chunks):
            lo, hi = j * per_chunk, min(total, (j + 1) * per_chunk)
            path = out / f"chunk-{j:05d}.npz"
            if path.name not in done:
                save_npz(
                    path,
                    samples=draw(lo, hi, chunk_seed(seed, j)).cpu().numpy(),
                    index=np.arange(lo, hi),
                    run=np.arange(lo, hi) // n_per_run,
                    seed=np.array(chunk_seed(seed, j)),
                )
            bar.update(n_seeds * (hi - lo))
        bar.close()


def iter_chunks(out: Path):
    """Yield each chunk's arrays: samples (S, m, C, H, W), index (m,), run (m,)."""
    meta = read_meta(out)
    paths = chunk_paths(out)
    if len(paths) != meta["n_chunks"]:
        have = f"{out} has {len(paths)} of {meta['n_chunks']} chunks"
        if drawer := locks.holder(out / SAMPLE_LOCK):
            raise UserError(f"{have}: another process (pid {drawer}) is drawing them; wait for it")
        raise UserError(f"{have}; run sample again")
    n_seeds = len(meta.get("seeds", [0]))  # a theory machine's folder holds one
    for j, p in enumerate(paths):
        chunk = read_chunk(p, n_seeds)
        _check_place(p, chunk["index"], j, meta.get("per_chunk"), meta["n_chunks"])
        yield chunk


def _check_place(path: Path, index: np.ndarray, j: int, per_chunk: int | None, n: int) -> None:
    """Refuse the `j`-th of `n` chunk files unless it is named chunk J and holds the samples of
    indices [J per_chunk, ...): all of them but in the last chunk. A chunk copied over another
    would otherwise count one run twice and leave another out."""
    if per_chunk is None:  # folders written before the chunking was stored
        return
    lo = j * per_chunk
    want = np.arange(lo, lo + (per_chunk if j < n - 1 else len(index)))
    if path.name != f"chunk-{j:05d}.npz" or not np.array_equal(index, want):
        held = f"indices {index.min()}-{index.max()}" if len(index) else "no samples"
        raise UserError(
            f"{path} holds {held}, not those of chunk {j} ({lo}-{lo + len(want) - 1}); delete "
            "it and sample again to redraw it"
        )


def load_samples(out: Path, limit: int | None = None) -> np.ndarray:
    """The first `limit` samples per seed (all when None), (S, n, C, H, W)."""
    parts, n = [], 0
    for chunk in iter_chunks(out):
        parts.append(chunk["samples"])
        n += chunk["samples"].shape[1]
        if limit is not None and n >= limit:
            break
    return np.concatenate(parts, 1)[:, :limit]


def save_preview(out: Path, seeds: list[int], n: int = 32, max_seeds: int = 4) -> Path:
    """OUT/samples.png: the first `n` samples of the first `max_seeds` seeds, a panel each."""
    from mosaicdiff import plots

    samples = load_samples(out, n)
    panels = {f"seed {seed}": x for seed, x in zip(seeds[:max_seeds], samples, strict=False)}
    path = out / "samples.png"
    plots.save(plots.grids(panels, title=f"first {samples.shape[1]} samples"), path)
    return path
