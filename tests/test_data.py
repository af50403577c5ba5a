import numpy as np
import pytest
import torch

from mosaicdiff.config import DataConfig
from mosaicdiff.data import load_dataset
from mosaicdiff.data.arrays import load_folder, load_npz
from mosaicdiff.data.pairings import PairingsSpec
from mosaicdiff.errors import UserError
from mosaicdiff.metrics import consistency


def test_paper_configuration_has_48_distinct_images_all_generated_images_consistent():
    ds = load_dataset(DataConfig())
    spec = ds.info["spec"]
    assert ds.images.shape == (2048, 3, 4, 4)
    assert ds.images.min() == -1 and ds.images.max() == 1
    assert consistency(ds.images, spec).consistent.all()
    distinct = {img.numpy().tobytes() for img in ds.images}
    assert len(distinct) == 48
    assert len(spec.all_images()) == 48
    assert distinct == {img.numpy().tobytes() for img in spec.all_images()}


def test_quadrants_show_key_left_value_right():
    spec = PairingsSpec.from_config(DataConfig())
    img = spec.render(torch.tensor([[0, 0, 0, 0]]))[0]  # red -> green everywhere
    red, green = torch.tensor([1.0, -1, -1]), torch.tensor([-1.0, 1, -1])
    assert torch.equal(img[:, 0, 0], red) and torch.equal(img[:, 1, 0], red)
    assert torch.equal(img[:, 0, 1], green) and torch.equal(img[:, 1, 1], green)


@pytest.mark.parametrize("layout", ["columns", "rows"])
@pytest.mark.parametrize("q", [1, 2, 3])
def test_variants_generate_consistent_images(layout, q):
    cfg = DataConfig(n_images=300, quadrants_per_side=q, layout=layout, seed=3)
    ds = load_dataset(cfg)
    assert ds.images.shape[-1] == 2 * q
    assert consistency(ds.images, ds.info["spec"]).consistent.all()
    spec = ds.info["spec"]  # cutting the labels into quadrants undoes `render`
    labels = spec.quadrants(torch.arange(2 * 4 * q * q).reshape(2, 2 * q, 2 * q))
    assert labels[1, -1].tolist() == [
        [8 * q * q - 2 * q - 2, 8 * q * q - 2 * q - 1],
        [8 * q * q - 2, 8 * q * q - 1],
    ]


def test_a_layout_that_is_neither_columns_nor_rows_is_refused():
    with pytest.raises(UserError, match="layout 'diagonal' is not one of"):
        PairingsSpec(("red", "green"), ((("red", "green"),),), layout="diagonal")


def test_generation_is_seeded():
    a = load_dataset(DataConfig(n_images=64, seed=1)).images
    b = load_dataset(DataConfig(n_images=64, seed=1)).images
    c = load_dataset(DataConfig(n_images=64, seed=2)).images
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_every_pattern_type_and_pairing_is_drawn():
    ds = load_dataset(DataConfig())
    assert set(ds.info["pattern_type"].tolist()) == {0, 1, 2}
    assert set(ds.info["pairing"].flatten().tolist()) == set(range(6))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pattern_types": ((("red", "green"), ("red", "blue")),)}, "reuses a colour"),
        ({"colours": ("red", "purple")}, "purple"),
        ({"pattern_types": ((("red", "cyan"),),)}, "not in data.colours"),
        ({"n_images": 0}, "n_images"),
        ({"kind": "nope"}, "not one of"),
    ],
)
def test_bad_specs_are_refused(kwargs, match):
    with pytest.raises(UserError, match=match):
        DataConfig(**kwargs)


def test_digits_are_scaled_to_unit_interval():
    ds = load_dataset(DataConfig(kind="digits"))
    assert ds.images.shape == (1797, 1, 8, 8)
    assert ds.images.min() == -1 and ds.images.max() == 1


def test_a_subset_is_the_first_images_with_their_labels():
    full = load_dataset(DataConfig(kind="digits"))
    ds = load_dataset(DataConfig(kind="digits", subset=64))
    assert torch.equal(ds.images, full.images[:64])
    assert torch.equal(ds.info["labels"], full.info["labels"][:64])
    with pytest.raises(UserError, match="subset=1798 asks for more than the 1,797 images"):
        load_dataset(DataConfig(kind="digits", subset=1798))
    with pytest.raises(UserError, match="data.subset=-1 must be 0"):
        DataConfig(kind="digits", subset=-1)
    with pytest.raises(UserError, match="the colour pairings' number is data.n_images"):
        DataConfig(subset=64)


def test_npz_layouts_and_bad_values(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=arr)
    x = load_npz(str(tmp_path / "a.npz")).images
    assert x.shape == (5, 3, 6, 6)
    torch.testing.assert_close(x[1, 2], torch.tensor(arr[1, :, :, 2] / 127.5 - 1.0).float())
    bad = np.zeros((2, 4, 4), dtype=np.float32)
    bad[0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", images=bad)
    with pytest.raises(UserError, match="NaN"):
        load_npz(str(tmp_path / "nan.npz"))
    np.savez(tmp_path / "big.npz", images=np.full((2, 4, 4), 3.0))
    with pytest.raises(UserError, match=r"\[-1, 1\]"):
        load_npz(str(tmp_path / "big.npz"))
    np.savez(tmp_path / "shape.npz", images=np.zeros((2, 5, 4, 4)))
    with pytest.raises(UserError, match="channels"):
        load_npz(str(tmp_path / "shape.npz"))
    # 16-bit images as a folder's are read (probe 53: refused as out of [-1, 1])
    from PIL import Image

    levels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    np.savez(tmp_path / "u16.npz", images=levels[None])
    (tmp_path / "png16").mkdir()
    Image.fromarray(levels).save(tmp_path / "png16" / "a.png")
    from_folder = load_folder(str(tmp_path / "png16")).images
    assert torch.equal(load_npz(str(tmp_path / "u16.npz")).images, from_folder)
    np.savez(tmp_path / "none.npz", images=np.zeros((0, 3, 4, 4), dtype=np.float32))
    with pytest.raises(UserError, match="holds no pixels"):
        load_npz(str(tmp_path / "none.npz"))
    # Not an npz at all: empty, text, or a bare .npy array.
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("1 2 3\n")
    np.save(tmp_path / "array.npy", arr)
    for name in ("empty.npz", "text.npz", "array.npy"):
        with pytest.raises(UserError, match=f"{name}' is not an .npz file"):
            load_npz(str(tmp_path / name))


@pytest.mark.parametrize("side", [1, 3, 5])
def test_folder_images_keep_their_channels_at_any_size(tmp_path, side):
    """RGB images read as (N, 3, side, side), red in channel 0, even where a side of 1 or 3
    makes (N, H, W, C) look like (N, C, H, W)."""
    from PIL import Image

    pixels = np.zeros((side, side, 3), dtype=np.uint8)
    pixels[..., 0] = 255  # pure red
    for i in range(2):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    x = load_folder(str(tmp_path)).images
    assert x.shape == (2, 3, side, side)
    assert (x[:, 0] == 1).all() and (x[:, 1:] == -1).all()


def test_grey_folder_images_keep_one_channel_and_16_bits(tmp_path):
    # 16-bit PNGs were clipped at 255 into all-white images, and grey ones read as RGB.
    from PIL import Image

    levels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000  # 0 .. 63,000
    Image.fromarray(levels).save(tmp_path / "a16.png")
    Image.fromarray((levels // 257).astype(np.uint8)).save(tmp_path / "b8.png")  # mode L
    Image.fromarray((levels // 257).astype(np.uint8)).convert("LA").save(tmp_path / "b9.png")
    (tmp_path / "._a16.png").write_bytes(b"\x00\x05\x16\x07")  # macOS's metadata twin
    x = load_folder(str(tmp_path)).images
    assert x.shape == (3, 1, 8, 8) and torch.equal(x[1], x[2])  # grey with alpha: grey
    np.testing.assert_allclose(x[0, 0].numpy(), levels / 65535 * 2 - 1, atol=1e-6)
    np.testing.assert_allclose(x[1, 0].numpy(), (levels // 257) / 255 * 2 - 1, atol=1e-6)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    assert load_folder(str(tmp_path)).images.shape == (4, 3, 8, 8)  # one in colour: RGB
    assert load_folder(str(tmp_path), size=4).images.shape == (4, 3, 4, 4)


def test_folders_named_like_images_are_passed_over(tmp_path):
    # Probe 53: a folder "x.png" stopped the loading.
    from PIL import Image

    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(tmp_path / "b.png")
    (tmp_path / "sub.png").mkdir()
    assert load_folder(str(tmp_path)).images.shape == (1, 1, 8, 8)


def test_a_folder_image_pil_cannot_read_is_named(tmp_path):
    (tmp_path / "bad.png").write_text("not a png")
    with pytest.raises(UserError, match=r"bad.png is not a readable image \(cannot identify"):
        load_folder(str(tmp_path))
