"""User data: an `.npz` array or a folder of images (read with Pillow), scaled to [-1, 1].

Accepted layouts: (N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3} (where both the
second and the last axis could be C, channels first); uint8 values are read as 0..255, uint16
as 0..65535, others must already lie in [-1, 1].
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from mosaicdiff.data.base import ImageDataset
from mosaicdiff.errors import UserError, check

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load_npz(path: str) -> ImageDataset:
    p = Path(path)
    check(p.is_file(), f"data.path={path!r} is not a file")
    check(zipfile.is_zipfile(p), f"data.path={path!r} is not an .npz file (np.savez writes one)")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            check(bool(keys), f"data.path={path!r} holds no arrays")
            key = "images" if "images" in keys else keys[0]
            check(
                key == "images" or len(keys) == 1,
                f"data.path={path!r} has arrays {keys}; name the images array 'images'",
            )
            array = z[key]
    except UserError:  # said in full above, not as an unreadable file
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"data.path={path!r} is not a readable .npz file ({e})") from None
    return ImageDataset(p.stem, to_images(array, path))


# Pillow's modes of one grey channel: 1-bit, 8-bit (alpha dropped, as RGBA's is) and 16-bit.
GREY_MODES = ("1", "L", "LA", "I;16", "I;16L", "I;16B", "I;16N", "I")  # "I": older Pillows' 16-bit


def load_folder(path: str, size: int = 0) -> ImageDataset:
    """The images in the folder `path` (hidden files, such as macOS's "._name.png", and
    folders left out), resized to `size` x `size` when it is not 0. A folder of grey images (8
    or 16 bits: `GREY_MODES`) reads as one channel, any other as RGB (a palette image, a GIF's,
    as colour even where its palette is grey: runs trained on such folders read them so);
    16-bit values are scaled by 65,535, not clipped at 255."""
    from PIL import Image

    p = Path(path)
    check(p.is_dir(), f"data.path={path!r} is not a folder")
    files = sorted(
        f
        for f in p.iterdir()
        if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") and f.is_file()
    )
    check(bool(files), f"data.path={path!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    opened, modes = [], set()
    for f in files:
        try:
            with Image.open(f) as im:
                modes.add(im.mode)
                opened.append((f.name, im.copy()))
        except OSError as e:  # PIL's UnidentifiedImageError included: a damaged or renamed file
            raise UserError(f"data.path={path!r}: {f.name} is not a readable image ({e})") from None
    grey = modes <= set(GREY_MODES)
    arrays = [_pixels(name, im, size, grey) for name, im in opened]
    if any(a.dtype != np.uint8 for a in arrays):  # 16-bit images among them: all as floats
        arrays = [a / np.float32(255) if a.dtype == np.uint8 else a for a in arrays]
        arrays = [a * 2 - 1 for a in arrays]
    shapes = {a.shape for a in arrays}
    check(
        len(shapes) == 1,
        f"data.path={path!r}: images differ in size {shapes}; resize them with data.image_size "
        "(theory: --image-size)",
    )
    # Channels first here: for images 1 or 3 pixels high, (N, H, W, 3) would pass for (N, C, H, W).
    return ImageDataset(p.name, to_images(np.stack(arrays).transpose(0, 3, 1, 2), path))


def _pixels(name: str, im, size: int, grey: bool) -> np.ndarray:
    """The image `im` (of the file `name`) as (H, W, C): uint8, or float32 in [0, 1] for a
    16-bit one."""
    from PIL import Image

    if im.mode.startswith("I"):
        x = np.asarray(im, dtype=np.float32)
        check(
            0 <= x.min() and x.max() <= 65535,
            f"{name}: values span [{x.min():g}, {x.max():g}], not 16-bit grey levels",
        )
        im = Image.fromarray(x / 65535)  # mode "F"
        if size:
            im = im.resize((size, size), Image.BICUBIC)
        x = np.asarray(im, dtype=np.float32).clip(0, 1)[..., None]
        return x if grey else np.repeat(x, 3, axis=-1)
    im = im.convert("L" if grey else "RGB")
    if size:
        im = im.resize((size, size), Image.BICUBIC)
    x = np.asarray(im)
    return x[..., None] if grey else x


def to_images(array: np.ndarray, source: str) -> torch.Tensor:
    """Any accepted layout and dtype -> (N, C, H, W) float32 in [-1, 1]."""
    check(array.dtype.kind in "uif", f"{source}: array dtype {array.dtype} is not numeric")
    if array.ndim == 3:
        array = array[:, None]
    check(array.ndim == 4, f"{source}: array shape {array.shape} must be (N, H, W) or 4-d")
    if array.shape[1] not in (1, 3) and array.shape[-1] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    check(array.shape[1] in (1, 3), f"{source}: array shape {array.shape} has no 1 or 3 channels")
    check(array.size > 0, f"{source}: array shape {array.shape} holds no pixels")
    if array.dtype == np.uint8:
        x = array.astype(np.float32) / 127.5 - 1.0
    elif array.dtype == np.uint16:  # as a folder's 16-bit images are read
        x = array.astype(np.float32) / np.float32(65535) * 2 - 1
    else:
        x = array.astype(np.float32)
        check(bool(np.isfinite(x).all()), f"{source}: array contains NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        check(
            lo >= -1 and hi <= 1,
            f"{source}: {array.dtype} values span [{lo:.7g}, {hi:.7g}]; they must lie in "
            "[-1, 1] (only uint8 and uint16 are read as 0..255 and 0..65535)",
        )
    return torch.from_numpy(np.ascontiguousarray(x))
