"""The reproduce report's sentences follow the numbers they are about."""

from mosaicdiff.config_io import override
from mosaicdiff.experiments import reproduce as rp
from mosaicdiff.experiments.report import PAPER
from mosaicdiff.experiments.report_text import (
    alternative_baselines,
    baseline_note,
    ordering_note,
)


def rows(**ours):
    return [{"model": "random", "ours": 3.7}] + [{"model": m, "ours": v} for m, v in ours.items()]


def test_the_ordering_note_checks_each_neighbour_in_the_papers_order():
    note = ordering_note(rows(attn=14.73, cnn=1.40, identity=0.92, top1=25.45))
    assert "(cnn < top1 < identity < attn)" in note
    assert "cnn < top1: holds, top1 < identity: does not hold, identity < attn: holds." in note
    assert "cnn (1.40% vs 10.88%)" in note and "attn (14.73% vs 64.03%)" in note
    near = ordering_note(rows(cnn=12.0, attn=63.0))  # a subset: its own neighbours
    assert "(cnn < attn): cnn < attn: holds." in near and "More than 5 points" not in near


def _baseline(tmp_path, *settings):
    cfg = override(rp.preset_config("quick"), ["sample.n_runs=2", "sample.n_per_run=50", *settings])
    return rp.baseline_stage(cfg, tmp_path)


def test_the_baseline_note_names_the_method_that_ran_and_compares_the_readings(tmp_path):
    note = baseline_note(_baseline(tmp_path / "paper"))
    assert "(by enumeration through the metric)" in note
    assert "key determines value: " in note and "None of them gives 5.38%" in note
    # 6^9 assignments: inclusion-exclusion, and no readings enumerated
    wide = baseline_note(_baseline(tmp_path / "wide", "data.quadrants_per_side=3"))
    assert "(by inclusion-exclusion)" in wide
    assert "Other readings" not in wide and "None of them" not in wide


def test_the_baseline_note_says_which_reading_gives_the_papers_number(tmp_path, monkeypatch):
    from mosaicdiff.config import DataConfig
    from mosaicdiff.data.pairings import PairingsSpec

    alts = alternative_baselines(PairingsSpec.from_config(DataConfig()))
    assert all(round(v, 2) != PAPER["random"] for v in alts.values())
    monkeypatch.setitem(PAPER, "random", round(alts["key determines value"], 2))
    note = baseline_note(_baseline(tmp_path))
    assert "is what 'key determines value' gives." in note and "None of them" not in note
