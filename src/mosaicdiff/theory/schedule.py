"""Patch size as a function of the timestep (Kamb & Ganguli 2024, Sec. 5: the locality scale
that best matches a trained network grows with the noise level).

A schedule is given as an int (the same size at every step), a sequence of T ints (a table
indexed by t, the form calibration produces and JSON stores), or a callable t -> int.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral
from pathlib import Path

from mosaicdiff.errors import UserError, check

PatchSpec = int | Sequence[int] | Callable[[int], int]


class PatchSchedule:
    """`schedule(t) -> k` for 0 <= t < T."""

    def __init__(self, spec: PatchSpec, T: int):
        self.T = T
        if isinstance(spec, bool | str) or not (
            isinstance(spec, int) or callable(spec) or isinstance(spec, Sequence)
        ):
            raise UserError(f"patch size {spec!r} must be an int, a list of T ints or t -> int")
        if isinstance(spec, Sequence):
            check(
                len(spec) == T,
                f"patch-size table has {len(spec)} entries; need one per timestep (T={T})",
            )
            bad = [k for k in spec if isinstance(k, bool) or not isinstance(k, Integral)]
            check(not bad, f"patch-size table entry {bad[0]!r} is not an int" if bad else "")
            spec = [int(k) for k in spec]
        self.spec = spec
        for k in self.sizes():
            check(k >= 1, f"patch size {k} must be at least 1")

    def __call__(self, t: int) -> int:
        if isinstance(self.spec, int):
            return self.spec
        if callable(self.spec):
            return int(self.spec(int(t)))
        return self.spec[int(t)]

    def sizes(self) -> list[int]:
        """The size at every t, as a list of T ints."""
        return [self(t) for t in range(self.T)]

    @classmethod
    def from_json(cls, data: dict, T: int) -> PatchSchedule:
        check(
            isinstance(data, dict) and "patch_size" in data,
            "patch schedule JSON must be an object with a 'patch_size' key",
        )
        return cls(data["patch_size"], T)

    @classmethod
    def load(cls, path: str | Path, T: int) -> PatchSchedule:
        from mosaicdiff.io import read_json

        path = Path(path)
        check(path.is_file(), f"patch schedule file {str(path)!r} does not exist")
        try:
            return cls.from_json(read_json(path), T)
        except UserError as e:
            raise UserError(f"patch schedule file {str(path)!r}: {e}") from None
