"""Where a command's wall time went: phases timed as they end (`Laps`), and the report's Time
table built from them (`time_section`)."""

from __future__ import annotations

import time


class Laps:
    """Seconds spent in each named phase: `laps(name)` ends the phase `name`, which began when
    the previous one ended (or at construction)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._tick = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._tick
        self._tick = now


def done_line(name: str, seconds: float | dict) -> str:
    """The progress line of a finished stage, timed as one number or by phase (`Laps.seconds`):
    'cnn: done in 384 s (train 126 s, sample 230 s, evaluate 28 s)'."""
    if not isinstance(seconds, dict):
        return f"{name}: done in {seconds:.0f} s"
    phases = ", ".join(f"{phase} {sec:.0f} s" for phase, sec in seconds.items())
    return f"{name}: done in {sum(seconds.values()):.0f} s ({phases})"


def time_section(timings: dict, notes: dict[str, str] | None = None) -> str:
    """The report's Time section: a row per phase of every stage, with its share of the total.

    Args:
        timings: stage name -> seconds, or -> {phase: seconds} (`Laps.seconds`); the key
            "total" is the command's wall time up to the report and goes last.
        notes: what a stage timed as one number did, for its phase column.
    """
    notes = notes or {}
    total = timings.get("total")
    lines = [
        "## Time\n",
        "Seconds this invocation spent in each phase; a phase reused from an earlier run takes "
        "next to none. The rows ran one after another, unless stages ran side by side in "
        "several processes (`reproduce --jobs`, the default on a GPU): then their shares add up "
        "to more than 100 %.\n",
        "| stage | phase | seconds | % of total |",
        "|---|---|---:|---:|",
    ]
    for name, value in timings.items():
        if name == "total":
            continue
        phases = value if isinstance(value, dict) else {notes.get(name, ""): value}
        for phase, sec in phases.items():
            share = f"{100 * sec / total:.0f}" if total else ""
            lines.append(f"| {name} | {phase} | {sec:.0f} | {share} |")
    if total is not None:
        lines.append(f"| total | all, before the report was written | {total:.0f} | 100 |")
    return "\n".join(lines) + "\n"
