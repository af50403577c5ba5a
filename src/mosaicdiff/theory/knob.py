"""`mosaicdiff theory knob`: the attention machine's consistency over its mixing weight lam.

AttentionELS (`theory/attention.py`) mixes the ELS mixture over dataset patches with a mixture
over the other patches of the image being generated, with weight lam. At lam = 0 it is ELS:
on the colour pairings its 2x2 patches on the quadrant grid make independent quadrants, so its
consistency sits at the exact random baseline (SPEC Sec. 2). Growing lam pulls each patch
towards the patches of its own image: the knob between local mosaics and global consistency.

The command samples the machine once per lam (a `theory sample` folder each, OUT/lam=X, so a
rerun resumes and a longer list reuses the finished ones) and writes OUT/knob.csv and
OUT/knob.png: consistency with its 95 % interval against lam, beside the share of samples
whose quadrants are all identical (consistency by copy-and-paste) and the random baseline.
"""

from __future__ import annotations

import argparse

from mosaicdiff.errors import UserError, check
from mosaicdiff.theory.cli_checks import DEFAULTS, theory_out
from mosaicdiff.theory.cli_sample import prepare_sample

COLUMNS = ("lam", "n", "consistency", "ci95_low", "ci95_high", "identical_quadrants", "baseline")


def parse_lams(text: str) -> list[float]:
    """'0,0.5,1' -> [0.0, 0.5, 1.0]: distinct weights in [0, 1], in the order given."""
    try:
        lams = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--lams {text!r} must be numbers like 0,0.25,0.5") from None
    check(bool(lams), f"--lams {text!r} names no weight")
    for lam in lams:
        check(0 <= lam <= 1, f"--lams: {lam} must be in [0, 1]")
    check(len(set(lams)) == len(lams), f"--lams {text!r} repeats a weight")
    names = [f"{lam:g}" for lam in lams]  # each weight's folder is OUT/lam=NAME
    check(
        len(set(names)) == len(names),
        f"--lams {text!r}: weights that agree to 6 significant digits would share a folder",
    )
    return lams


def cmd_knob(args) -> int:
    from mosaicdiff import plots
    from mosaicdiff.io import atomic_write_csv, read_json

    lams = parse_lams(args.lams)
    check(args.lam is None, f"--lam {args.lam}: theory knob takes its weights from --lams")
    check(args.machine == "attn", f"--machine {args.machine!r}: lam weighs only the attn machine")
    check(args.data == "pairings", f"--data {args.data!r}: consistency needs --data pairings")
    out = theory_out(args.out)
    # Each folder has the settings of `theory sample --lam LAM --out FOLDER`: it resumes them.
    one = {k: v for k, v in vars(args).items() if k != "lams"}
    folders = {lam: out / f"lam={lam:g}" for lam in lams}  # distinct: parse_lams checks
    runs = {  # every weight's options are checked before the first prints or writes anything
        lam: prepare_sample(argparse.Namespace(**{**one, "lam": lam, "out": str(folder)}))
        for lam, folder in folders.items()
    }
    rows = []
    for lam, folder in folders.items():
        print(f"lam = {lam:g}:")
        runs[lam]()
        r = read_json(folder / "consistency.json")
        low, high = r["ci95"]
        rows.append(
            {
                "lam": lam,
                "n": r["n"],
                "consistency": r["rate"],
                "ci95_low": low,
                "ci95_high": high,
                "identical_quadrants": r["identical_quadrants"],
                "baseline": r["baseline_exact"],
            }
        )
    atomic_write_csv(out / "knob.csv", rows, COLUMNS)
    plots.save(plots.knob_curve(rows, args.attention or DEFAULTS["attention"]), out / "knob.png")
    print(f"table -> {out / 'knob.csv'}, figure -> {out / 'knob.png'}")
    return 0
