"""Decoding: image files and uploaded bytes to uint8 tensors (C, H, W), within limits checked before the work.

Everything that reads an image goes through here: the dataset sources (a folder's files, the bytes in a shard),
``mlp-mixer predict`` and the HTTP server (an upload), so an image decodes alike wherever it comes from: the same
formats (:data:`FORMATS`, the ones the docs name; Pillow is asked to open no other), the same EXIF orientation
(a phone's portrait photo is upright everywhere), the same limits. Nothing here knows about datasets:
``import mlp_mixer.data.decode`` loads no reader. The limits live in :mod:`mlp_mixer.utils.limits`, read at each
call: the pixels a decoder works on (the canvas, and any tile or frame larger than it) and the bytes read.
"""

from __future__ import annotations

import io
import stat
import warnings
from pathlib import Path

import torch

from ..utils import limits

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
# The formats read, by content: what IMAGE_EXTENSIONS name and the docs list. Pillow is asked to open no other
# (it would read PPM, TGA, ICO, PCX, SGI, DDS, QOI, ... too); MPO, phones' JPEG with a second picture, opens as a
# JPEG and is one.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
# EXIF Orientation -> what shows the (H, W, C) picture upright: PIL.ImageOps.exif_transpose's transposes
# (FLIP_LEFT_RIGHT, ROTATE_180, FLIP_TOP_BOTTOM, TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90) on the array
_UPRIGHT = {
    2: lambda a: a.flip(1),
    3: lambda a: a.flip(0, 1),
    4: lambda a: a.flip(0),
    5: lambda a: a.transpose(0, 1),
    6: lambda a: a.rot90(-1, (0, 1)),
    7: lambda a: a.transpose(0, 1).flip(0, 1),
    8: lambda a: a.rot90(1, (0, 1)),
}
_TIFF_TILE_WIDTH, _TIFF_TILE_LENGTH, _EXIF_ORIENTATION = 322, 323, 0x0112


class ImageError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


class TooLargeError(ImageError, limits.BudgetError):
    """An input over one of the limits in :mod:`mlp_mixer.utils.limits`; the message names it and the limit."""


def read_bytes(path: str | Path, limit: int | None = None, what: str = "file") -> bytes:
    """The bytes of a regular file, at most ``limit`` (default ``limits.MAX_FILE_BYTES``): a device
    (``/dev/zero``), a named pipe or a socket would be read forever or block, so they are refused before being
    opened."""
    path, limit = Path(path), limits.MAX_FILE_BYTES if limit is None else limit
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


def _open(data: bytes, name: str):  # noqa: ANN202 - a PIL.Image.Image, imported lazily
    """Pillow's image of ``data``, its header read and nothing decoded, in one of :data:`FORMATS` only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the callers apply their own cap
            return Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as err:  # Pillow's guard, at 2x its MAX_IMAGE_PIXELS
        raise TooLargeError(f"{name}: declares over {2 * Image.MAX_IMAGE_PIXELS:,} pixels") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"{name}: not an image in a format this reads ({', '.join(FORMATS)})") from err


def _decoder_extent(img) -> tuple[int, int]:  # noqa: ANN001 - a PIL.Image.Image
    """The largest (width, height) the decoder of ``img``'s first frame holds at once: the canvas, or a tile that
    is larger. Pillow's pixel cap reads the canvas only, so a TIFF declaring 1x1 pixels with one 24000² tile
    would pass it and cost 1.7 GB in libtiff's tile buffer."""
    extents = [img.size]
    extents += [(tile[1][2] - tile[1][0], tile[1][3] - tile[1][1]) for tile in img.tile if tile[1]]
    tags = getattr(img, "tag_v2", None)  # TIFF: libtiff allocates whole tiles of TileWidth x TileLength
    if tags is not None and _TIFF_TILE_WIDTH in tags and _TIFF_TILE_LENGTH in tags:
        extents.append((int(tags[_TIFF_TILE_WIDTH]), int(tags[_TIFF_TILE_LENGTH])))
    return max(extents, key=lambda wh: wh[0] * wh[1])


def image_header(data: bytes, name: str = "image", max_pixels: int | None = None) -> tuple[str, int, int]:
    """(format, width, height) from an image's header, without decoding a pixel; ImageError if it is not in one
    of :data:`FORMATS`, TooLargeError if its decoder would hold a tile larger than the canvas and ``max_pixels``
    (default ``limits.MAX_PIXELS``; the canvas itself is the caller's to check against its own cap)."""
    max_pixels = limits.MAX_PIXELS if max_pixels is None else max_pixels
    with _open(data, name) as header:
        found, (width, height) = header.format, header.size
        tile_w, tile_h = _decoder_extent(header)
    if tile_w * tile_h > max(width * height, max_pixels):
        raise TooLargeError(
            f"{name}: a {width}x{height} image whose decoder would hold a {tile_w}x{tile_h} tile "
            f"({tile_w * tile_h:,} pixels), over the limit of {max_pixels:,} (MLP_MIXER_MAX_PIXELS)"
        )
    return ("JPEG" if found == "MPO" else found), width, height  # MPO: phones' multi-picture JPEG


def read_image(path: str | Path, in_channels: int = 3) -> torch.Tensor:
    """Decode an image file, by content not extension, to uint8 (in_channels, H, W) (see
    :func:`decode_image_bytes`).

    Palette, CMYK, RGBA, grayscale and 16-bit images are converted (alpha dropped, 16-bit scaled to 8-bit), and
    turned upright by their EXIF orientation. Regular files only, at most ``limits.MAX_FILE_BYTES`` read and
    ``limits.MAX_PIXELS`` decoded.
    """
    return decode_image_bytes(read_bytes(path), in_channels, str(path))


def _pixels(data: bytes, in_channels: int, name: str, max_pixels: int) -> torch.Tensor:
    """The image's first frame as uint8 (H, W, 1 or 3), upright; the header is read once and checked against the
    limits before anything is decoded.

    JPEGs in YCbCr or grey (nearly all of them) decode through simplejpeg's libjpeg-turbo straight into an array:
    bitwise the pixels Pillow's libjpeg-turbo gives (RGB, and grey as libjpeg's luma, as through ``draft``;
    ``tests/data/test_decode.py`` holds them equal), in about half the time (Pillow's decode, its RGB->RGBX
    unpacking and the copy out cost 1.7 ms on a 500x375 photo, this 0.9: docs/data.md, Throughput). Everything
    else, and any JPEG simplejpeg refuses (it is strict about damaged data), goes through Pillow, which decides as
    before. Pillow's decoders raise on damaged data where torchvision's PNG decoder can crash the process, and
    importing torchvision costs as much as importing torch."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with _open(data, name) as img, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            _check_extent(img, name, max_pixels)
            array = _turbo(data, img, in_channels)
            if array is None:
                img.seek(0)  # an animated GIF or a multi-page TIFF: the first frame
                if in_channels == 1 and img.format in ("JPEG", "MPO"):
                    img.draft("L", img.size)  # libjpeg's own grayscale output (its Y), as torchvision's GRAY mode
                img.load()  # Pillow's TIFF reader turns the image upright as it loads (and drops the tag)
            orientation = _orientation(img)
            if array is None:
                frame = img
                if frame.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: keep the top 8 bits
                    frame = frame.point(lambda v: v / 256).convert("L")
                array = np.array(frame.convert("L" if in_channels == 1 else "RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as err:
        if isinstance(err, ImageError):
            raise
        reason = str(err).split("\n")[0][:200] or type(err).__name__
        raise ImageError(f"{name}: cannot decode image ({reason})") from err
    pixels = torch.from_numpy(array.reshape(*array.shape[:2], -1))
    if orientation in _UPRIGHT:
        pixels = _UPRIGHT[orientation](pixels).contiguous()
    return pixels


def _orientation(img) -> int:  # noqa: ANN001 - a PIL.Image.Image
    try:
        return img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - damaged EXIF: the pixels are still an image, shown as stored
        return 1


def _turbo(data: bytes, img, in_channels: int):  # noqa: ANN001, ANN202 - a PIL image in, a numpy array or None out
    """simplejpeg's decode of a YCbCr or grey JPEG as (H, W, C) uint8, or None where it does not apply (another
    format or colour space, simplejpeg not installed, data it refuses)."""
    if img.format not in ("JPEG", "MPO") or img.mode not in ("RGB", "L"):
        return None
    try:
        import simplejpeg
    except ImportError:  # a platform without its wheel: Pillow decodes the same pixels, slower
        return None
    try:
        return simplejpeg.decode_jpeg(data, colorspace="GRAY" if in_channels == 1 else "RGB")
    except ValueError:  # damaged or unusual data: Pillow's decoder decides, as it always did
        return None


def _check_extent(img, name: str, max_pixels: int) -> None:  # noqa: ANN001 - a PIL.Image.Image
    """Refuse, from the header, a canvas over ``max_pixels`` or a decoder tile larger than both canvas and limit."""
    width, height = img.size
    tile_w, tile_h = _decoder_extent(img)
    if tile_w * tile_h > max(width * height, max_pixels):
        raise TooLargeError(
            f"{name}: a {width}x{height} image whose decoder would hold a {tile_w}x{tile_h} tile "
            f"({tile_w * tile_h:,} pixels), over the limit of {max_pixels:,} (MLP_MIXER_MAX_PIXELS)"
        )
    if width * height > max_pixels:
        raise TooLargeError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(MLP_MIXER_MAX_PIXELS)"
        )


def decode_image_bytes(
    data: bytes, in_channels: int = 3, name: str = "image", max_pixels: int | None = None
) -> torch.Tensor:
    """Decode encoded image bytes by content to uint8 (in_channels, H, W), upright; errors name ``name``.

    The pixel count is read from the header first: a small file declaring a huge canvas, or a tile larger than
    its canvas (decompression bombs), is refused before anything is decoded (limit ``max_pixels``, default
    ``limits.MAX_PIXELS``). Only :data:`FORMATS` are read.

    :func:`read_image` reads a file and calls this, so an upload and the same file on disk decode alike. The
    tensor is a view of the decoder's (H, W, C) array (channels_last strides): a (C, H, W) copy would cost more
    than the resize after it (0.8 ms for a 500x375 photo), and torch's uint8 resize works on (H, W, C) anyway.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    pixels = _pixels(data, in_channels, name, limits.MAX_PIXELS if max_pixels is None else max_pixels)
    if pixels.shape[2] == 1 and in_channels != 1:
        pixels = pixels.expand(-1, -1, in_channels).contiguous()
    if pixels.shape[2] != in_channels:
        raise ImageError(f"{name}: {pixels.shape[2]} channels cannot be converted to {in_channels}")
    return pixels.permute(2, 0, 1)  # (H, W, C) -> (C, H, W): a view, channels_last strides
