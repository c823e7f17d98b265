"""Pillow-read images (PNG, JPEG, TIFF, BMP, ...): the "pil" row of the formats table, with the pixel
limits of ``common`` in charge of Pillow's own decompression-bomb check."""
from __future__ import annotations

import numpy as np

from medclipsvd.data.readers.common import (MAX_PIXELS_ENV, _check_file, _int_scale, _mp, check_image_size,
                                            pixel_limits, to_rgb)
from medclipsvd.errors import DataError


def _pil_open(path: str):
    """``Image.open`` with our pixel limit in charge of Pillow's bomb check (same threshold by default)."""
    import warnings

    from PIL import Image

    mx, _ = pixel_limits()
    if Image.MAX_IMAGE_PIXELS is not None and mx > 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = mx  # the user raised our limit explicitly: Pillow must not refuse first
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # our check reports instead
    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:  # Pillow refused before decoding; its message holds the size
        import re

        m = re.search(r"\((\d+) pixels\)", str(exc))
        n = f"{_mp(int(m.group(1)))} megapixels" if m else "larger"
        raise DataError(f"{path}: image is {n}, above the limit of {_mp(mx)} megapixels (a guard against "
                        f"decompression bombs); downscale it, or raise the limit with {MAX_PIXELS_ENV}="
                        f"{m.group(1) if m else 2 * mx} if the image is genuine.") from None


def _reduce(im, work: int):
    """Box-reduce a decoded image by an integer factor so that it holds at most ``work`` pixels."""
    import math

    w, h = im.size
    if w * h <= work:
        return im
    factor = math.ceil(math.sqrt(w * h / work))
    if im.mode in ("I;16", "I;16B", "I;16L"):
        im = im.convert("I")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode not in ("L", "RGB", "I", "F", "LA", "RGBA", "CMYK"):
        im = im.convert("RGB")
    return im.reduce(factor)


def read_pil(path: str, index: int | None = None) -> np.ndarray:
    from PIL import UnidentifiedImageError

    _check_file(path)
    try:
        with _pil_open(path) as opened:
            im = opened
            if index is not None:
                n = getattr(im, "n_frames", 1)
                if not 0 <= index < n:
                    raise DataError(f"{path}: page/frame {index} requested but the file has {n}.")
                im.seek(index)
            check_image_size(path, *im.size)  # from the header: nothing decoded yet
            _, work = pixel_limits()
            if im.size[0] * im.size[1] > work and im.format == "JPEG":
                shrink = (work / (im.size[0] * im.size[1])) ** 0.5  # DCT scaling: never below the target
                im.draft(im.mode, tuple(max(1, int(d * shrink)) for d in im.size))
            im.load()  # decode now so truncation is reported here, with the file name
            im = _reduce(im, work)
            mode = im.mode
            if mode in ("RGB", "L"):
                arr = np.asarray(im)
            elif mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im)
            elif mode in ("LA", "La"):
                arr = np.asarray(im.convert("L"))
            else:  # P, RGBA, CMYK, YCbCr, 1 ...: PIL's own conversion, as open_clip's _convert_to_rgb does
                arr = np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (unknown or corrupt format); re-export it as PNG/JPEG "
                        f"or remove it from the split.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: image cannot be decoded ({exc}); the file is probably truncated or corrupt; "
                        f"re-copy it or remove it from the split.") from None
    return to_rgb(_int_scale(arr), path)


def check_pil_header(path: str) -> None:
    """The image size from the header only (Pillow decodes lazily)."""
    with _pil_open(path) as im:
        check_image_size(path, *im.size)
