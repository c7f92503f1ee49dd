"""An image folder (one sub-folder per class, PNG/JPEG) as tensors, read with Pillow; image grids as PNG.

No torchvision: Pillow decodes and resizes, numpy stacks. Pixels are scaled to [-1, 1], the range of
the DCGAN generator's tanh output. Channels are grey when every image is grey (or when asked),
else RGB; a palette or alpha image is converted, never rejected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from genforge.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")


def load_image_folder(folder: Path, size: int, channels: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images (N, C, size, size) in [-1, 1], labels (N,), class names sorted) of `folder/<class>/*.png|jpg`."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if folder.is_file():  # "does not exist" would send the user looking for a path that is right there
        raise DataError(f"image folder {folder} is a file: give a folder of class sub-folders "
                        f"({folder}/<class>/*.png)")
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((folder / c).iterdir())
             if f.suffix.lower() in EXTENSIONS]
    if not files:
        raise DataError(f"{folder} has no PNG/JPEG images in class sub-folders (expected {folder}/<class>/*.png)")
    # A class without images could never be generated nor recognised: it would cap coverage below 1 and
    # give a conditional generator a label it never saw.
    if empty := [c for i, c in enumerate(classes) if all(label != i for _, label in files)]:
        raise DataError(f"class folder {folder / empty[0]} holds no PNG/JPEG images: add some or remove the folder")
    images = []
    for path, _ in tqdm(files, desc="images", unit="image", dynamic_ncols=True):  # thousands of photos take minutes
        try:
            with Image.open(path) as im:
                images.append(as_rgb(im).resize((size, size), Image.Resampling.BICUBIC))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{path} is not a readable image: {e}") from None
    pixels = np.stack([np.asarray(im, dtype=np.float32) for im in images])  # (N, H, W, 3)
    grey = np.allclose(pixels[..., 0], pixels[..., 1]) and np.allclose(pixels[..., 1], pixels[..., 2])
    if channels == 1 or (channels == 0 and grey):
        pixels = pixels.mean(axis=3, keepdims=True)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous() / 127.5 - 1.0
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    return x, labels, classes


def as_rgb(image: Any) -> Any:
    """An 8-bit RGB copy of a Pillow image. 16-bit grey PNGs open as mode I;16 (or I), whose values Pillow's
    own conversion clips at 255, turning nearly every pixel white: they are scaled to 8 bits first."""
    from PIL import Image

    if image.mode == "I" or image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float32) / 257.0
        image = Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8))
    return image.convert("RGB")


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """A PNG grid of images in [-1, 1] (N, C, H, W), written atomically."""
    from PIL import Image

    from genforge.artifacts import atomic_open

    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    n, c, h, w = x.shape
    rows = (n + nrow - 1) // nrow
    grid = torch.zeros(c, rows * (h + 2) + 2, nrow * (w + 2) + 2, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, 2 + r * (h + 2):2 + r * (h + 2) + h, 2 + col * (w + 2):2 + col * (w + 2) + w] = x[i]
    array = grid.permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if c == 1 else array)
    with atomic_open(Path(path), "wb") as f:
        image.save(f, format="PNG")
    return Path(path)
