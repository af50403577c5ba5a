import pytest

from mosaicdiff.config import RunConfig
from mosaicdiff.config_io import assign, matches, override, read_mapping, to_dict
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


@pytest.mark.parametrize(
    "assignment, message",
    [
        # Unclosed brackets are refused whole, not split at their commas.
        ("train.seeds=[0,1", r"train.seeds='\[0,1' is not a JSON list \(Expecting ','"),
        # A bad item is named by its place in the list.
        ("train.seeds=0,x", r"train.seeds\[1\]='x' must be a whole number"),
        ("train.seeds=[0,x]", r"train.seeds\[1\]='x' must be a whole number"),
        ("train.seeds=[0,1.5]", r"train.seeds\[1\]=1.5 must be a whole number"),
        # Fields the data kind does not read: else the pairings would train in place of the
        # images the path names, without a word.
        ("data.path=mine.npz", r"data.path='mine.npz' is read by data.kind=npz or folder only"),
        ("data.image_size=8", r"data.image_size=8 resizes data.kind=folder images only"),
    ],
)
def test_a_bad_assignment_names_the_field_the_item_or_the_reason(assignment, message):
    with pytest.raises(UserError, match=message):
        override(RunConfig(), [assignment])


def test_a_string_field_may_start_with_a_bracket():
    assert override(RunConfig(), ["data.kind=npz", "data.path=[a].npz"]).data.path == "[a].npz"


def test_bare_words_in_brackets_are_a_list_as_without_them():
    data = {"archs": ["resnet"], "name": "x"}
    for text in ("[unet, dit]", '["unet", "dit"]'):
        assert assign(data, [f"archs={text}"])["archs"] == ["unet", "dit"]
    with pytest.raises(UserError, match=r"archs='\[\[unet\], dit\]' is not a JSON list"):
        assign(data, ["archs=[[unet], dit]"])


def test_folder_fields_are_read_with_data_kind_folder():
    cfg = override(RunConfig(), ["data.kind=folder", "data.path=imgs", "data.image_size=8"])
    assert (cfg.data.path, cfg.data.image_size) == ("imgs", 8)


@pytest.mark.parametrize(
    "name, text, where",
    [
        ("spec.yaml", "grid:\n  model.hidden: [8, 16]\n  model.hidden: [32]\n", "line 3"),
        ("cfg.json", '{"train": {"epochs": 2, "epochs": 3}}', "['epochs']"),
        ("cfg.toml", "[train]\nepochs = 2\nepochs = 3\n", "line 3"),
    ],
)
def test_a_key_given_twice_is_refused_not_overwritten(tmp_path, name, text, where):
    # The parsers keep the last silently: a grid's first list of values vanished unseen.
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match="could not be parsed") as e:
        read_mapping(tmp_path / name, "--config")
    assert where in str(e.value)


def test_a_yaml_merge_key_may_still_override_what_it_merges(tmp_path):
    text = "a: &a {epochs: 2, lr: 1}\nb:\n  <<: *a\n  epochs: 3\n"
    (tmp_path / "m.yaml").write_text(text)
    assert read_mapping(tmp_path / "m.yaml", "--config")["b"] == {"epochs": 3, "lr": 1}


def test_a_yaml_exponent_without_a_dot_is_a_number_where_a_float_goes(tmp_path):
    # Probe 55: YAML 1.1 reads 3e-4 as text, and train.lr refused it "must be a finite number".
    from mosaicdiff.config_io import from_dict

    (tmp_path / "c.yaml").write_text("train: {lr: 3e-4, weight_decay: 1E-5}\n")
    given = read_mapping(tmp_path / "c.yaml", "--config")["train"]
    assert given["lr"] == "3e-4"  # as PyYAML reads it
    data = to_dict(RunConfig())
    cfg = from_dict(RunConfig, {**data, "train": {**data["train"], **given}})
    assert (cfg.train.lr, cfg.train.weight_decay) == (3e-4, 1e-5)
    for text in ("fast", "nan", "1e-3x", ""):  # other text stays refused
        with pytest.raises(UserError, match="must be a finite number"):
            from_dict(RunConfig, {**data, "train": {**data["train"], "lr": text}})


def test_a_section_built_in_python_is_checked_as_one_read_from_text():
    # Probe 62: TrainConfig(seeds=3) and TrainConfig(lr="x") died in a TypeError
    from mosaicdiff.config import DiffusionConfig, TrainConfig
    from mosaicdiff.errors import UserError

    for kwargs, needle in [
        ({"seeds": 3}, "train.seeds=3 is ambiguous"),
        ({"lr": "fast"}, "train.lr='fast' must be a finite number"),
        ({"epochs": 2.5}, "train.epochs=2.5 must be a whole number"),
    ]:
        with pytest.raises(UserError, match=needle):
            TrainConfig(**kwargs)
    with pytest.raises(UserError, match="diffusion.T='1000' must be a whole number"):
        DiffusionConfig(T="1000")
    from mosaicdiff.config import RunConfig

    for kwargs, needle in [
        ({"device": None}, "device=None must be 'cpu' or 'cuda'"),
        ({"train": {"epochs": 3}}, "train={'epochs': 3} must be a TrainConfig"),
    ]:
        with pytest.raises(UserError, match=needle):
            RunConfig(**kwargs)
    assert TrainConfig(seeds=[0, 1]).seeds == (0, 1)  # a list, as JSON gives, is the tuple
    assert hash(TrainConfig(seeds=[0, 1])) == hash(TrainConfig(seeds=(0, 1)))
