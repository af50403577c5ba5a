"""`mosaicdiff theory sample | knob | calibrate | compare`: closed-form machines from the shell.

This file holds the parsers; each command lives beside it:
- sample (`cli_sample.py`): draw from a machine on a dataset (pairings, digits, npz or folder)
  into a resumable samples folder like `mosaicdiff sample`'s, then score the samples:
  consistency on the pairings, the creativity metrics of `mosaicdiff evaluate` on other data.
- knob (`knob.py`): `sample` of the attention machine at several mixing weights lam on the
  pairings, and its consistency against lam.
- calibrate, compare (`cli_agreement.py`): per-step patch sizes that best match a trained run's
  network (K&G Sec. 5); per-step eps cosine and final-sample r^2 between a run's networks and a
  machine, drawn as samples.png (both from the same noise) and eps_cosine.png; with
  `--epoch all` at every checkpoint the run kept, and their course over training
  (`compare_epochs.py`).
`cli_checks.py` checks the option values and builds the machine they name. Bad values raise
`UserError` (the main CLI prints one line and exits 2).
"""

from __future__ import annotations

import argparse

from mosaicdiff.evaluate import CREATIVITY_LIMIT
from mosaicdiff.theory.cli_agreement import cmd_calibrate, cmd_compare
from mosaicdiff.theory.cli_checks import DATA_KINDS, DEFAULTS, MACHINE_MAX_SIDE
from mosaicdiff.theory.cli_sample import cmd_sample
from mosaicdiff.theory.knob import cmd_knob
from mosaicdiff.theory.machines import MACHINES


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each option's default, except None (its help says what None means)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def register(subparsers) -> None:
    """Add the `theory` command and its subcommands to the main parser's subparsers."""
    p = subparsers.add_parser("theory", help="closed-form score machines (IS, LS, ELS, attention)")
    sub = p.add_subparsers(dest="theory_command", required=True)

    shows_defaults = {"formatter_class": _ShowDefaults}
    s = sub.add_parser("sample", help="sample a machine on a dataset", **shows_defaults)
    _sample_options(s)
    s.set_defaults(handler=cmd_sample)
    k = sub.add_parser(
        "knob",
        help="consistency of the attention machine over its mixing weight lam",
        description="Sample AttentionELS on the colour pairings at each --lams weight (a "
        "`theory sample` folder each, OUT/lam=X) and write OUT/knob.csv and OUT/knob.png. "
        "The defaults (1,000 DDPM samples at 6 weights) take ~30 s on 2 cores.",
        **shows_defaults,
    )
    _sample_options(k, knob=True)
    k.add_argument("--lams", default="0,0.1,0.25,0.5,0.75,1", help="weights lam in [0, 1]")
    k.set_defaults(handler=cmd_knob, machine="attn", lam=None)  # --lams names the weights

    for name, text, out in (
        ("calibrate", "per-step patch sizes for a run", "output JSON file"),
        ("compare", "agreement of a run's networks with a machine", "output folder"),
    ):
        c = sub.add_parser(name, help=text, description=DESCRIPTIONS[name], **shows_defaults)
        c.add_argument("run", help="trained run directory (see `mosaicdiff train`)")
        _machine_options(c, patch=name != "calibrate")
        c.add_argument("--n", type=int, default=16, help="trajectories (samples) per seed")
        c.add_argument("--every", type=int, default=10, help="evaluate every n-th timestep")
        c.add_argument("--seed", type=int, default=0, help="seed of x_T and the sampler noise")
        c.add_argument("--member", type=int, help="model seed index (default: all)")
        c.add_argument("--out", required=True, help=out)
        c.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub.choices["calibrate"].add_argument(
        "--candidates",
        help="comma-separated patch sizes to try (default: 1,3,5,7 up to the image side; "
        "at --stride s: s, s+2, s+4, s+6)",
    )
    sub.choices["calibrate"].add_argument(
        "--epoch",
        type=int,
        help="a checkpoint the run kept (train.keep_every; default: the newest)",
    )
    sub.choices["compare"].add_argument(
        "--epoch",
        help="a checkpoint the run kept (train.keep_every; default: the newest); several as "
        "E,E,... or all: each one's agreement in OUT/epoch-000250 (for 250), and their course "
        "over training in OUT/agreement.csv and agreement.png",
    )
    sub.choices["calibrate"].set_defaults(handler=cmd_calibrate)
    sub.choices["compare"].set_defaults(handler=cmd_compare)
    sub.metavar = "{" + ",".join(sub.choices) + "}"  # a missing command names them all


# Both run each network by 1,000-step DDPM, x0 unclipped, from --n noises of --seed: the
# trajectories the machine is scored on, whatever sampler the run's own samples used.
DESCRIPTIONS = {
    "calibrate": "At every --every-th step t of each network's own DDPM trajectories, pick the "
    "patch size of --candidates whose machine eps has the highest mean cosine with the "
    "network's (Kamb & Ganguli Sec. 5); other steps take the nearest evaluated step's choice. "
    "Writes OUT (JSON: patch_size per t, the cosine table, and the stride, data, run and "
    "checkpoint it was made on), for `theory sample|compare --patch OUT`. One stride serves "
    "every candidate: on the pairings, the default machine (2 at stride 2, one patch per "
    "quadrant) is --candidates 2 --stride 2.",
    "compare": "Run each network and the machine from the same --n noises by 1,000-step DDPM "
    "(x0 unclipped). Writes OUT/agreement.json: per step, the mean cosine of the two eps on the "
    "network's own trajectory; per sample, r^2 (the squared Pearson correlation of the two "
    "final images' pixels), with its median and quartiles; and OUT/samples.png, "
    "OUT/eps_cosine.png.",
}


def _sample_options(s, knob: bool = False) -> None:
    """The options of `theory sample` (and of `theory knob`, which runs it once per lam, on the
    colour pairings only: the options of other data stay out of its help, parsed to be refused)."""
    hidden = argparse.SUPPRESS
    kinds = "pairings only (knob measures consistency)" if knob else ", ".join(DATA_KINDS)
    s.add_argument("--data", default="pairings", help=f"dataset: {kinds}")
    s.add_argument(
        "--data-path", default="", help=hidden if knob else "npz or folder: where the images are"
    )
    s.add_argument(
        "--image-size",
        type=int,
        default=0,
        help=hidden
        if knob
        else f"folder: resize to this side (0 keeps it; at most {MACHINE_MAX_SIDE})",
    )
    s.add_argument("--n-images", type=int, help="pairings: training images (default 2048)")
    s.add_argument(
        "--subset",
        type=int,
        default=0,
        help=hidden if knob else "digits, npz, folder: the first N images only (0: all)",
    )
    s.add_argument("--data-seed", type=int, help="pairings: dataset seed (default 0)")
    _machine_options(s, knob)
    s.add_argument("--n", type=int, default=1000, help="number of samples")
    s.add_argument(
        "--batch",
        type=int,
        default=1000,
        help="samples per sampler call, each batch a chunk on disk (a rerun keeps it; with "
        "--noise threefry each has its own seed, so another --batch draws other samples)",
    )
    s.add_argument(
        "--sampler",
        help="ddpm (all T steps) or ddim (default: ddpm on the pairings, ddim on other data, "
        "as a network's run samples them)",
    )
    s.add_argument("--steps", type=int, help="ddim: number of steps (default 50)")
    s.add_argument("--eta", type=float, default=0.0, help="ddim: noise in [0, 1] (0 deterministic)")
    s.add_argument("--seed", type=int, default=0, help="seed of x_T and the sampler noise")
    s.add_argument(
        "--noise",
        help="indexed (each sample's own noise, from --seed and its index) or threefry (each "
        "batch's own seed: earlier versions' default, kept by folders they drew; default: "
        "indexed)",
    )
    s.add_argument(
        "--clip-x0",
        action=argparse.BooleanOptionalAction,
        help="clamp the x0 estimate to [-1, 1] at every step (default: on for data other than "
        "the pairings, as a network's run samples them)",
    )
    s.add_argument(
        "--limit",
        type=int,
        help=hidden
        if knob
        else f"creativity (not pairings): the first N samples (default {CREATIVITY_LIMIT})",
    )
    s.add_argument("--out", required=True, help="output folder (run again to resume)")
    s.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _machine_options(p, knob: bool = False, patch: bool = True) -> None:
    """With `knob`, --machine and --lam stay out of the help: knob samples the attn machine at
    its --lams weights. They are still parsed, so that knob refuses them in words (else
    argparse would take --lam for an abbreviation of --lams). Without `patch` (calibrate, which
    tries each of its --candidates), --patch is left out of the help the same way."""
    hidden = argparse.SUPPRESS
    p.add_argument(
        "--machine",
        default="els",
        help=hidden
        if knob
        else f"one of {', '.join(MACHINES)}, or one of your own as FILE.py:Class "
        "(examples/own_machine.py)",
    )
    p.add_argument(
        "--patch",
        default=None,
        help="patch size: an int, or a JSON file from `theory calibrate` "
        "(default: 2 with stride 2 on pairings, 3 otherwise)"
        if patch
        else hidden,
    )
    p.add_argument(
        "--stride",
        type=int,
        help="grid stride (default: 1; 2 with the pairings' default patch; a calibration "
        "file's own)"
        if patch
        else "grid stride of every candidate (default: 1)",
    )
    p.add_argument(
        "--boundary",
        help=f"padding: circular or zeros (default: {DEFAULTS['boundary']}; bbels: zeros)",
    )
    p.add_argument(
        "--lam",
        type=float,
        help=hidden if knob else f"attn: in-image mixture weight (default: {DEFAULTS['lam']})",
    )
    p.add_argument("--attention", help=f"attn: soft or top1 (default: {DEFAULTS['attention']})")
    p.add_argument("--precision", default="float64", help="softmax arithmetic: float64|float32")
