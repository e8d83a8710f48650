"""Decoding: image files and uploaded bytes to uint8 tensors (C, H, W), within limits checked before the work.

Everything that reads an image goes through here: the dataset sources (a folder's files, the bytes in a shard),
``mlp-mixer predict`` and the HTTP server (an upload), so an image decodes alike wherever it comes from. Nothing
here knows about datasets: ``import mlp_mixer.data.decode`` loads no reader. The caps :data:`MAX_PIXELS` and
:data:`MAX_FILE_BYTES` are read at each call (patch them here, on this module).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import torch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")


# Limits on what one input may cost, checked before the work is done; raise them with these variables.
MAX_PIXELS = int(os.environ.get("MLP_MIXER_MAX_PIXELS", 2**26))  # 67 Mpx (8192x8192): above any camera
MAX_FILE_BYTES = int(float(os.environ.get("MLP_MIXER_MAX_FILE_MB", 256)) * 2**20)  # per image file read


class ImageError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


class TooLargeError(ImageError):
    """An input over one of the limits above; the message names it and the limit."""


def read_bytes(path: str | Path, limit: int | None = None, what: str = "file") -> bytes:
    """The bytes of a regular file, at most ``limit`` (default :data:`MAX_FILE_BYTES`): a device (``/dev/zero``),
    a named pipe or a socket would be read forever or block, so they are refused before being opened."""
    path, limit = Path(path), MAX_FILE_BYTES if limit is None else limit
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise ImageError(f"{path}: cannot read {what} ({err.strerror or err})") from err
    if not stat.S_ISREG(mode):
        kind = "folder" if stat.S_ISDIR(mode) else "device, pipe or socket"
        raise ImageError(f"{path}: not a regular file (a {kind})")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise ImageError(f"{path}: cannot read {what} ({err.strerror or err})") from err
    if len(data) > limit:
        raise TooLargeError(f"{path}: larger than the limit of {limit / 2**20:g} MiB (MLP_MIXER_MAX_FILE_MB)")
    return data


def image_header(data: bytes, name: str = "image") -> tuple[str, int, int]:
    """(format, width, height) from an image's header, without decoding a pixel; ImageError if it has none."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller applies its own cap
            with Image.open(io.BytesIO(data)) as header:
                found, (width, height) = header.format, header.size
    except Image.DecompressionBombError as err:  # Pillow's guard, at 2x its MAX_IMAGE_PIXELS
        raise TooLargeError(f"{name}: declares over {2 * Image.MAX_IMAGE_PIXELS:,} pixels") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"{name}: not an image in a format this reads (JPEG, PNG, GIF, WEBP, BMP, TIFF)") from err
    return ("JPEG" if found == "MPO" else found), width, height  # MPO: phones' multi-picture JPEG


def read_image(path: str | Path, in_channels: int = 3) -> torch.Tensor:
    """Decode an image file, by content not extension, to uint8 (in_channels, H, W).

    Palette, CMYK, RGBA, grayscale and 16-bit images are converted (alpha dropped, 16-bit scaled to 8-bit).
    Regular files only, at most :data:`MAX_FILE_BYTES` read and :data:`MAX_PIXELS` decoded.
    """
    return decode_image_bytes(read_bytes(path), in_channels, str(path))


def _decode_with_pillow(data: bytes, in_channels: int, name: str) -> torch.Tensor:
    """Pillow's decoders: they raise on damaged data where torchvision's PNG decoder can crash the process, and
    importing torchvision costs as much as importing torch. Pillow's libjpeg-turbo gives torchvision's
    ``decode_image`` pixels bitwise (RGB, and grayscale read as libjpeg's luma through ``draft``)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)  # an animated GIF or a multi-page TIFF: the first frame
            if in_channels == 1 and img.format in ("JPEG", "MPO"):
                img.draft("L", img.size)  # libjpeg's own grayscale output (its Y), as torchvision's GRAY mode
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: keep the top 8 bits
                img = img.point(lambda v: v / 256).convert("L")
            array = torch.from_numpy(np.array(img.convert("L" if in_channels == 1 else "RGB")))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as err:
        reason = str(err).split("\n")[0][:200] or type(err).__name__
        raise ImageError(f"{name}: cannot decode image ({reason})") from err
    return array.reshape(*array.shape[:2], -1).permute(2, 0, 1).contiguous()


def decode_image_bytes(
    data: bytes, in_channels: int = 3, name: str = "image", max_pixels: int | None = None
) -> torch.Tensor:
    """Decode encoded image bytes by content to uint8 (in_channels, H, W); errors name ``name``.

    The pixel count is read from the header first: a small file declaring a huge canvas (a decompression bomb)
    is refused before anything is decoded (limit ``max_pixels``, default :data:`MAX_PIXELS`).

    :func:`read_image` reads a file and calls this, so an upload and the same file on disk decode alike.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    _, width, height = image_header(data, name)  # ImageError where Pillow knows no such format
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if width * height > max_pixels:
        raise TooLargeError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(MLP_MIXER_MAX_PIXELS)"
        )
    image = _decode_with_pillow(data, in_channels, name)
    if image.shape[0] == 1 and in_channels != 1:
        image = image.expand(in_channels, -1, -1).contiguous()
    if image.shape[0] != in_channels:
        raise ImageError(f"{name}: {image.shape[0]} channels cannot be converted to {in_channels}")
    return image
