"""User data: an `.npz` array or a folder of images (read with Pillow), scaled to [-1, 1].

Accepted layouts: (N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3}; uint8 values are
read as 0..255, floats must already lie in [-1, 1].
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
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"data.path={path!r} is not a readable .npz file ({e})") from None
    return ImageDataset(p.stem, to_images(array, path))


def load_folder(path: str, size: int = 0) -> ImageDataset:
    from PIL import Image

    p = Path(path)
    check(p.is_dir(), f"data.path={path!r} is not a folder")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    check(bool(files), f"data.path={path!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if size:
                    im = im.resize((size, size), Image.BICUBIC)
                arrays.append(np.asarray(im))
        except OSError as e:  # PIL's UnidentifiedImageError included: a damaged or renamed file
            raise UserError(f"data.path={path!r}: {f.name} is not a readable image ({e})") from None
    shapes = {a.shape for a in arrays}
    check(len(shapes) == 1, f"data.path={path!r}: images differ in size {shapes}; set image_size")
    # Channels first here: for images 1 or 3 pixels high, (N, H, W, 3) would pass for (N, C, H, W).
    return ImageDataset(p.name, to_images(np.stack(arrays).transpose(0, 3, 1, 2), path))


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
    else:
        x = array.astype(np.float32)
        check(bool(np.isfinite(x).all()), f"{source}: array contains NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        check(
            lo >= -1 and hi <= 1,
            f"{source}: values span [{lo:.3g}, {hi:.3g}]; floats must be in [-1, 1] (or uint8)",
        )
    return torch.from_numpy(np.ascontiguousarray(x))
