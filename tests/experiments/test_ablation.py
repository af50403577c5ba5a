from mosaicdiff.config_io import to_dict
from mosaicdiff.experiments import ablation as ab
from mosaicdiff.experiments.reproduce import model_configs, preset_config

ROWS = [  # the report's table rows, in percent
    {"model": "random", "paper": 5.38, "ours": 3.7},
    {"model": "random_mc", "paper": 5.38, "ours": 3.4},
    {"model": "cnn", "paper": 10.88, "ours": 1.0},
    {"model": "top1", "paper": 21.64, "ours": 20.0},
    {"model": "attn", "paper": 64.03, "ours": 15.0},
]


def _diff(a, b, prefix=""):
    out = []
    for k in a:
        if isinstance(a[k], dict):
            out += _diff(a[k], b[k], f"{prefix}{k}.")
        elif a[k] != b[k]:
            out.append(f"{prefix}{k}")
    return out


def test_only_models_far_from_the_paper_are_ablated():
    assert ab.models_to_ablate(ROWS) == ["cnn", "attn"]


def test_each_point_changes_exactly_one_field_of_its_models_run(tmp_path):
    configs = model_configs(preset_config("quick"), ("cnn", "top1"))
    plan = ab.ablation_plan(configs, ["cnn", "top1"], tmp_path)
    assert len(plan.points) == 2 * len(ab.CHANGES)
    for p in plan.points:
        ref = to_dict(configs[p.values["model"]])
        changed = _diff(ref, to_dict(p.cfg))
        assert changed == [ab.CHANGES[p.values["change"]][0]], (p.name, changed)
        assert p.run_path.parent == tmp_path / "ablation" / "points"
    top1_epochs = next(p for p in plan.points if p.name == "top1__epochs=x4").cfg.train.epochs
    assert top1_epochs == 4 * configs["top1"].train.epochs  # top1's own (doubled) epochs


def test_a_change_to_the_reference_value_is_skipped(tmp_path):
    from mosaicdiff.config_io import override

    configs = {"cnn": override(preset_config("quick"), ["model.nonlinearity=relu"])}
    names = [p.name for p in ab.ablation_plan(configs, ["cnn"], tmp_path).points]
    assert "cnn__nonlinearity=relu" not in names and len(names) == len(ab.CHANGES) - 1


def test_the_section_reports_each_change_against_the_reference():
    points = [
        {"model": "cnn", "change": "time_embedding=none", "consistency_mean": 0.002},
        {"model": "cnn", "change": "nonlinearity=relu", "consistency_mean": 0.005},
        {"model": "cnn", "change": "layout=rows", "consistency_mean": 0.011},
        {"model": "cnn", "change": "epochs=x4", "consistency_mean": 0.06},
    ]
    md = ab.ablation_markdown(points, ROWS)
    assert (
        "| cnn | 10.88 | 1.00 | 0.20 (-0.80) | 0.50 (-0.50) | 1.10 (+0.10) | 6.00 (+5.00) |" in md
    )
    assert "`time_embedding=none` moves consistency most (-0.80 points, away from" in md
    assert "4x the epochs moves it +5.00 points" in md
    assert ab.ablation_markdown([], ROWS) == ""
