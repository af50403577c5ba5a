from mosaicdiff.experiments import timing
from mosaicdiff.experiments.timing import Laps, done_line, time_section


def test_laps_time_each_phase_from_the_end_of_the_previous_one(monkeypatch):
    clock = iter([10.0, 12.5, 13.0, 20.0])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    laps = Laps()
    for name in ("train", "sample", "evaluate"):
        laps(name)
    assert laps.seconds == {"train": 2.5, "sample": 0.5, "evaluate": 7.0}


def test_time_section_rows_and_shares():
    timings = {"cnn": {"train": 30.0, "sample": 50.0}, "theory": 20.0, "total": 200.0}
    md = time_section(timings, {"theory": "machines and agreement"})
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == [
        "| cnn | train | 30 | 15 |",
        "| cnn | sample | 50 | 25 |",
        "| theory | machines and agreement | 20 | 10 |",
        "| total | all, before the report was written | 200 | 100 |",
    ]
    # Without a total there is no share to give, and no total row.
    assert "| cnn | train | 30 |  |" in time_section({"cnn": {"train": 30.0}})


def test_done_line_sums_the_phases():
    line = done_line("cnn", {"train": 126.2, "sample": 230.1, "evaluate": 28.0})
    assert line == "cnn: done in 384 s (train 126 s, sample 230 s, evaluate 28 s)"
    assert done_line("theory machines", 50.4) == "theory machines: done in 50 s"
