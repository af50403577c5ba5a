"""DDPM for the paper's networks as one hand-vectorised C++ loop (`ddpm_loop.cpp`), x86 with AVX2
or AVX-512.

`FastDDPM` uses it for cnn, attn, identity and top1 (SiLU) with Threefry noise when it
compiles, at any shape `buildable` allows: the paper's 4 tokens of 12 values and hidden 32, and
the widths and image sizes a sweep tries. It computes the same samples as the compiled token-space
step (tested to float tolerance against `sampling.ddpm_sample`), several times faster: each
block of 8 samples (16 with AVX-512) stays in registers and L1 from x_T to x_0, where the
compiled step sends every intermediate through memory and MKL's thin GEMMs (`python -m
benchmarks` measures it).

It is built for the widest vectors torch uses here (`isa()`: AVX-512 where the CPU has it;
ATEN_CPU_CAPABILITY=avx2 chooses AVX2), once per shape, machine and torch version with
`torch.utils.cpp_extension.load_inline` (~1 min; the shape is a compile-time constant, so the
compiler unrolls every loop over it), in a build folder of its own, and moved into the cache in
one step: TORCH_EXTENSIONS_DIR (by default ~/.cache/torch_extensions)/
mosaicdiff_ddpm_loop_<N>x<P>x<H>-<key>.so.
So a build killed halfway leaves nothing for the next one to wait on (torch's shared build
folder has a lock file that a SIGKILL leaves behind, and every later build waits on it
forever), and virtualenvs with the same torch share one build. A process that finds a live
process on this host building the same file waits for it instead of building it again, as
`reproduce` does for the build `built_in_background` starts while the networks train. Without
AVX2 it is not used, silently; without a working C++ compiler neither it nor the compiled step
is tried (`inductor.can_compile` warns once, and the eager step runs); a build that fails
otherwise gives a warning, and the compiled step runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

from mosaicdiff.models.patchnet import patchify

SOURCE = Path(__file__).with_name("ddpm_loop.cpp")
ARCHS = ("cnn", "attn", "identity", "top1")  # the kernel's arch codes, in order
PAPER_SHAPE = (4, 12, 32)  # (tokens, values per token, hidden) of the paper's networks
# torch's CPU capability -> the loop's vector flags (as ATen's own kernels for it) and the
# samples one vector holds.
ISAS = {
    "AVX2": (["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2"], 8),
    "AVX512": (
        ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-DCPU_CAPABILITY_AVX512"],
        16,
    ),
}


def isa() -> str | None:
    """The vectors the loop is built for: torch's CPU capability (AVX512 or AVX2, the widest the
    CPU has; ATEN_CPU_CAPABILITY=avx2 chooses AVX2 on an AVX-512 CPU), None where neither runs."""
    x86 = platform.machine() in ("x86_64", "AMD64")
    capability = torch.backends.cpu.get_cpu_capability()
    return capability if x86 and capability in ISAS else None


NAME = "mosaicdiff_ddpm_loop"
CFLAGS = ["-O3", "-fopenmp"]
STALE_S = 3600  # a build folder this old, from another host, belongs to a killed build
WAIT_S = 600  # the longest a process waits for another's build before building itself


# Where the loop is used, measured against the compiled step by `python -m
# benchmarks.native_shapes` on the 2-core AVX2 host (per sample-step, two runs): the cnn 1.9-3.0x
# at hidden 16-128, at 16 tokens (8x8 images) and at 48 values (patch 4); attn 2.3-3.4x at
# hidden 16, 1.3-1.6x at 64 and 0.8-1.1x at 128, where its tokens' activations no longer fit
# the registers; 1.5-1.7x at 16 tokens or 48 values. On a 2-core AVX-512 host (a Xeon; the
# 16-lane build, one run): the cnn 1.7-4.2x everywhere; attn, identity and top1 1.7-3.5x at
# hidden 16-32, 1.2-2.0x at 64 and 1.0-1.7x at 128; 1.6-29x at 16 tokens or 48 values (29x
# against a compiled step `folding.mix` has since made 7x faster). On a 2-core AVX-512 AMD EPYC
# (Zen 5; one run): attn, identity and top1 2.1-4.3x at 64, 2.2-3.7x at 128, 3.3-4.1x at 16
# tokens. So attention with hidden 128 takes the loop where its vectors hold 16 samples only.
MAX_TOKENS, MAX_VALUES, MAX_HIDDEN = 16, 192, 128  # tokens, values per sample, hidden
MAX_ATTENTION_HIDDEN = {"AVX2": 64, "AVX512": 128}  # by isa()


def buildable(shape: tuple[int, int, int]) -> bool:
    """Whether the loop is built for (tokens N, values per token P, hidden H): vectors of four
    columns (P, H), noise in groups of four Box-Muller pairs (N P), and no bigger than measured
    faster than the compiled step."""
    n, p, h = shape
    fits = n <= MAX_TOKENS and n * p <= MAX_VALUES and h <= MAX_HIDDEN
    return p % 4 == 0 and h % 4 == 0 and n * p % 8 == 0 and fits


def shape_of(net) -> tuple[int, int, int]:
    """(tokens, values per token, hidden) of a `FoldedNet`."""
    _, h, w = net.image_shape
    return (h // net.patch) * (w // net.patch), net.w_in.shape[1], net.w_in.shape[2]


def module_name(shape: tuple[int, int, int]) -> str:
    return f"{NAME}_{'x'.join(map(str, shape))}"


def _width() -> str:
    """The ISAS entry whose settings apply here: isa(), or AVX2's where neither runs (nothing
    is built there)."""
    return isa() or "AVX2"


def lanes() -> int:
    """Samples per vector of the loop built here."""
    return ISAS[_width()][1]


def cflags(shape: tuple[int, int, int]) -> list[str]:
    n, p, h = shape
    return [*CFLAGS, *ISAS[_width()][0], f"-DMD_TOKENS={n}", f"-DMD_VALUES={p}", f"-DMD_HIDDEN={h}"]


def cached_path(shape: tuple[int, int, int] = PAPER_SHAPE) -> Path:
    """Where the loop built for `shape` lives: one file per shape, source, flags (vector width
    included), torch and Python version."""
    from torch.utils.cpp_extension import get_default_build_root

    what = [SOURCE.read_text(), *cflags(shape), torch.__version__, sys.version, platform.machine()]
    key = hashlib.sha256("\0".join(what).encode()).hexdigest()[:16]
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    return root / f"{module_name(shape)}-{key}.so"


def _build_prefix(so: Path) -> str:
    """The start of the name of this process's folder for building `so`: what it builds and
    whose build it is (tempfile adds a random tail of letters, digits and '_')."""
    return f".{so.stem}-build-{socket.gethostname()}-{os.getpid()}-"


def _owner(build: Path) -> tuple[str, int] | None:
    """(host, pid) of the process building in folder `build`, as its name says."""
    owner = build.name.partition("-build-")[2].rsplit("-", 2)[:-1]
    return (owner[0], int(owner[1])) if len(owner) == 2 and owner[1].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _killed(build: Path) -> bool:
    """Whether the build in folder `build` was killed: its process is gone (one of this host's),
    or the folder is older than STALE_S (another host's, on a shared filesystem)."""
    owner = _owner(build)
    if owner and owner[0] == socket.gethostname() and not _alive(owner[1]):
        return True
    return time.time() - build.stat().st_mtime > STALE_S


def _builder(so: Path) -> int | None:
    """The pid of another live process on this host that is building `so` now, if any."""
    for build in so.parent.glob(f".{so.stem}-build-{socket.gethostname()}-*"):
        owner = _owner(build)
        if owner and owner[1] != os.getpid() and _alive(owner[1]):
            return owner[1]
    return None


def _wait_for_builder(so: Path) -> None:
    """Wait while another process on this host builds `so` (as `built_in_background` starts
    one), at most WAIT_S: its build is the same file, and two cost twice the time."""
    pid, deadline = _builder(so), time.monotonic() + WAIT_S
    if pid is not None:
        print(f"mosaicdiff: waiting for process {pid}'s build of {so}", file=sys.stderr)
    while pid is not None and not so.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
        pid = _builder(so)


def _remove_killed_builds(folder: Path) -> None:
    for build in folder.glob(f".{NAME}*-build-*"):
        try:
            if _killed(build):
                shutil.rmtree(build, ignore_errors=True)
        except OSError:  # another process removed it first
            pass


def build(name: str, source: str, folder: str, shape: tuple[int, int, int] = PAPER_SHAPE):
    """Compile `source` (the loop's, or a variant of it) for `shape` into module `name`, in
    `folder`."""
    from torch.utils.cpp_extension import load_inline

    return load_inline(
        name,
        cpp_sources=[source],
        functions=["ddpm_loop"],
        extra_cflags=cflags(shape),
        extra_ldflags=["-fopenmp"],
        build_directory=folder,
    )


@cache
def _module(shape: tuple[int, int, int] = PAPER_SHAPE):
    so, name = cached_path(shape), module_name(shape)
    if not so.is_file():
        _wait_for_builder(so)
    if so.is_file():
        spec = importlib.util.spec_from_file_location(name, so)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    so.parent.mkdir(parents=True, exist_ok=True)
    _remove_killed_builds(so.parent)
    print(f"mosaicdiff: building the native DDPM loop, once (~1 min): {so}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=_build_prefix(so), dir=so.parent) as tmp:
        module = build(name, SOURCE.read_text(), tmp, shape)
        os.replace(Path(tmp) / f"{name}.so", so)  # one step: others see all of it or nothing
    return module


@cache
def available(shape: tuple[int, int, int] = PAPER_SHAPE) -> bool:
    """Whether the kernel for `shape` runs here: an AVX2 or AVX-512 CPU, and it builds (or is
    built)."""
    if isa() is None:
        return False
    try:
        _module(shape)
    except Exception as e:  # no ninja, a failed build: the compiled step stands in
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        warnings.warn(f"native DDPM loop not built ({why}); compiled step used", stacklevel=2)
        return False
    return True


@contextmanager
def built_in_background(shapes):
    """Within the block, build the loop for each of `shapes` not built yet, in a process of its
    own: on one core, while the caller trains on the other. `_module` waits for that build
    rather than start its own. When the block ends (Ctrl-C and SIGTERM included) a build still
    at work is stopped, its folder removed; one whose caller was SIGKILLed runs to its end."""
    todo = [s for s in dict.fromkeys(shapes) if not cached_path(s).is_file()]
    process = None
    if todo and isa() is not None:
        print(
            f"mosaicdiff: building the native DDPM loop in the background, once: "
            f"{', '.join(str(cached_path(s)) for s in todo)}",
            file=sys.stderr,
        )
        args = [sys.executable, "-m", __name__, *("x".join(map(str, s)) for s in todo)]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        process = subprocess.Popen(args, start_new_session=True, **quiet)
        # Reaped as soon as it ends: a zombie would look alive to a `_module` waiting on it.
        threading.Thread(target=process.wait, daemon=True).start()
    try:
        yield
    finally:
        if process is not None:
            # The builder and its ninja. `_main` turns SIGTERM into an exception, so its folder
            # goes; a compiler that ninja started in a process group of its own may run on to
            # its end (~30 s), its output going nowhere, as with a foreground build stopped.
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:  # done
                pass
            process.wait()


def _main(argv: list[str]) -> int:
    """`python -m mosaicdiff.fast.native 4x12x32 ...`: build the loop for each shape (what
    `built_in_background` runs). Quiet: a failed build is reported where the loop is used."""
    from mosaicdiff.cli import sigterm_interrupts

    with sigterm_interrupts():
        shapes = [tuple(int(v) for v in text.split("x")) for text in argv]
        return 0 if all([available(shape) for shape in shapes]) else 1


def supports(net, noise: str) -> bool:
    """Whether `net` (a `FoldedNet`) is a network this kernel computes, on the CPU."""
    shape = shape_of(net)
    return (
        net.arch in ARCHS
        and net.act is F.silu
        and noise == "threefry"
        and not net.w_in.is_cuda
        and buildable(shape)
        and (net.arch == "cnn" or shape[2] <= MAX_ATTENTION_HIDDEN[_width()])
    )


def ddpm(
    net,
    coef: torch.Tensor,
    x_T: torch.Tensor,
    keys: torch.Tensor,
    first: torch.Tensor,
    t_first: int,
    n_steps: int,
) -> torch.Tensor:
    """DDPM from step `t_first` for `n_steps` steps: x_T (S*B, C, H, W) -> x. `coef` (T, 3) is
    (c_x, c_eps, sigma); sample i of seed s has Threefry key keys[s] and index first[s] + i
    (`noise.Counters.per_seed`)."""
    s, lane = net.n_seeds, lanes()
    b = x_T.shape[0] // s
    d = x_T[0].numel()
    blocks = -(-b // lane)
    x = x_T.reshape(s, b, d).float()
    x = F.pad(x, (0, 0, 0, blocks * lane - b))  # padded lanes compute noise nobody keeps
    x = x.view(s, blocks, lane, d).transpose(2, 3).contiguous()  # (S, blocks, D, lanes)
    # Token n's value q is image value tok[n P + q].
    tok = patchify(torch.arange(d).view(1, *net.image_shape), net.patch).reshape(-1).int()
    keys, first = keys.to(torch.int32).contiguous(), first.to(torch.int32).contiguous()
    w_in, bias, w2, b_out, coef = (
        w.float().contiguous() for w in (net.w_in, net.bias_t, net.w2, net.b_out, coef)
    )
    a = torch.empty(0) if net.a is None else net.a.float().contiguous()  # cnn, identity: none
    code = ARCHS.index(net.arch)
    _module(shape_of(net)).ddpm_loop(
        x, code, w_in, bias, w2, a, net.scale, b_out, coef, tok, keys, first, t_first, n_steps
    )
    x = x.transpose(2, 3).reshape(s, blocks * lane, d)[:, :b]
    return x.reshape(x_T.shape).to(x_T.dtype)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
