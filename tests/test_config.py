import pytest

from mosaicdiff.config import RunConfig, matches, override, to_dict
from mosaicdiff.errors import UserError


def test_a_config_written_before_a_field_existed_still_matches():
    cfg = RunConfig()
    old = to_dict(cfg)
    del old["sample"]["clip_x0"]  # as written before the option was added
    assert matches(old, cfg)
    assert not matches(old, override(cfg, ["sample.clip_x0=true"]))
    assert not matches({**old, "nope": 1}, cfg)  # unknown keys never match


def test_a_bare_number_of_seeds_is_refused_not_read_as_one_seed():
    cfg = RunConfig()
    assert override(cfg, ["train.seeds=[3]"]).train.seeds == (3,)
    assert override(cfg, ["train.seeds=0,4"]).train.seeds == (0, 4)
    with pytest.raises(UserError, match=r"train.seeds=3 is ambiguous: write \[3\]"):
        override(cfg, ["train.seeds=3"])
