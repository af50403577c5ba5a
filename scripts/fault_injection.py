"""The long fault-injection run: SIGKILL train, sample and reproduce many times, then compare.

Each scenario (see `mosaicdiff.faults.SCENARIOS`) runs once uninterrupted and once killed
`--kills` times at random moments (one kill inside an atomic write), re-running the same command
after every kill. The killed run must end with the same checkpoints, samples, results and table
as the uninterrupted one, and no temporary file left behind. Prints one line per scenario and
writes the results as JSON; exits 1 if any byte of results was lost.

    python scripts/fault_injection.py                       # 20 kills each, scale 3 (~20 min)
    python scripts/fault_injection.py --kills 50 --scale 5 --scenarios train,sample

The fast version of the same checks runs in CI (tests/test_faults.py).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from mosaicdiff.cli import Parser
from mosaicdiff.faults import SCENARIOS, run_scenario


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs per scenario (default 20)")
    p.add_argument("--scale", type=int, default=3, help="work per scenario, x the CI size (3)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--json", default="fault_injection.json", help="results file")
    p.add_argument("--keep", help="keep the runs in this folder (default: a temporary one)")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [n for n in names if n not in SCENARIOS]
    if bad or args.kills < 1 or args.scale < 1:
        p.error(f"--scenarios {bad} must be in {list(SCENARIOS)}; --kills and --scale >= 1")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for name in names:
            r = run_scenario(name, root / name, args.kills, args.scale, args.seed)
            results.append(r)
            print(
                f"{name:10s} kills {r['kills']:3d} (in a write {r['in_write']}), "
                f"attempts {r['attempts']:3d}, files compared {r['files_compared']:4d}, "
                f"bytes lost {r['bytes_lost']}, leftover tmp {len(r['leftover_tmp'])}, "
                f"{r['seconds']:.0f} s",
                flush=True,
            )
    Path(args.json).write_text(json.dumps(results, indent=2))
    lost = sum(r["bytes_lost"] + len(r["leftover_tmp"]) for r in results)
    print(f"total kills {sum(r['kills'] for r in results)}, bytes lost {lost} -> {args.json}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
