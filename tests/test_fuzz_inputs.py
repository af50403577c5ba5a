"""Property-based checks of user input: every invalid value gives one line naming it, exit 2,
and writes nothing; every valid value resolves."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mosaicdiff.cli import main

ARCHS = ["cnn", "attn", "identity", "top1", "resnet", "resnet_attn", "unet", "dit"]
COLOURS = ["red", "green", "blue", "yellow", "cyan", "magenta", "white", "black"]

# field -> (strategy of values, oracle saying whether a value is valid)
FIELDS = {
    "train.epochs": (st.integers(-5, 5), lambda v: v >= 1),
    "train.batch_size": (st.integers(-3, 3), lambda v: v >= 1),
    "train.lr": (st.floats(-1, 1, allow_nan=False), lambda v: v > 0),
    "train.ema_decay": (st.floats(-0.5, 1.5, allow_nan=False), lambda v: 0 <= v < 1),
    "train.checkpoint_every": (st.integers(-3, 3), lambda v: v >= 1),
    "train.keep_every": (st.integers(-3, 3), lambda v: v >= 0),
    "sample.n_runs": (st.integers(-3, 3), lambda v: v >= 1),
    "sample.n_per_run": (st.integers(-3, 3), lambda v: v >= 1),
    "sample.eta": (st.floats(-2, 2, allow_nan=False), lambda v: v == 0),  # ddpm: no eta
    "data.n_images": (st.integers(-3, 3), lambda v: v >= 1),
    "data.subset": (st.integers(-2, 3), lambda v: v == 0),  # the pairings take n_images
    "data.quadrants_per_side": (st.integers(-2, 70), lambda v: 1 <= v <= 64),
    "model.arch": (st.sampled_from(ARCHS + ["mlp", "", "CNN"]), lambda v: v in ARCHS),
    "model.hidden": (st.integers(-2, 3), lambda v: v >= 1),
    "data.layout": (
        st.sampled_from(["columns", "rows", "diagonal"]),
        lambda v: v in ("columns", "rows"),
    ),
}


def _run(tmp_path, capsys, assignment):
    out = tmp_path / "never"
    code = main(["train", "--out", str(out), "--set", assignment, "--dry-run"])
    captured = capsys.readouterr()
    return code, captured, out


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_each_field_accepts_exactly_its_valid_values(tmp_path, capsys, data):
    key = data.draw(st.sampled_from(sorted(FIELDS)))
    strategy, valid = FIELDS[key]
    value = data.draw(strategy)
    code, captured, out = _run(tmp_path, capsys, f"{key}={json.dumps(value)}")
    assert not out.exists()
    if valid(value):
        assert code == 0, captured.err
    else:
        err = captured.err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert key.split(".")[1] in err and "Traceback" not in err
        assert (f"={value!r}" if isinstance(value, str) else f"={value}") in err, err


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    types=st.lists(
        st.lists(
            st.tuples(st.sampled_from(COLOURS), st.sampled_from(COLOURS)), min_size=1, max_size=3
        ),
        min_size=1,
        max_size=3,
    )
)
def test_pattern_types_are_valid_iff_no_colour_repeats(tmp_path, capsys, types):
    colours = sorted({c for t in types for p in t for c in p})
    assignment = f"data.pattern_types={json.dumps(types)}"
    out = tmp_path / "never"
    code = main(
        [
            "train",
            "--out",
            str(out),
            "--set",
            f"data.colours={json.dumps(colours)}",
            "--set",
            assignment,
            "--dry-run",
        ]
    )
    err = capsys.readouterr().err.strip()
    reuse = any(len({c for p in t for c in p}) != 2 * len(t) for t in types)
    repeated_type = len({frozenset(map(tuple, t)) for t in types}) != len(types)
    single_colour = len(colours) < 2
    if reuse or repeated_type or single_colour:
        assert code == 2 and len(err.splitlines()) == 1
    else:
        assert code == 0, err
    assert not out.exists()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(min_size=1, max_size=20))
def test_garbage_assignments_never_trace_back(tmp_path, capsys, text):
    code, captured, out = _run(tmp_path, capsys, text)
    assert code in (0, 2)
    assert "Traceback" not in captured.err and not out.exists()
    if code == 2:
        assert len(captured.err.strip().splitlines()) == 1
