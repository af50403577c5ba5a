from mosaicdiff.config import RunConfig, matches, override, to_dict


def test_a_config_written_before_a_field_existed_still_matches():
    cfg = RunConfig()
    old = to_dict(cfg)
    del old["sample"]["clip_x0"]  # as written before the option was added
    assert matches(old, cfg)
    assert not matches(old, override(cfg, ["sample.clip_x0=true"]))
    assert not matches({**old, "nope": 1}, cfg)  # unknown keys never match
