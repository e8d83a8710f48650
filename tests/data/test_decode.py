"""data.decode: odd image files decode by content, or fail naming the file; upright by their EXIF orientation; only
the documented formats; the decoder's own buffers within the pixel limit."""

import io
import struct
import time
import zlib

import numpy as np
import pytest
import torch

from mlp_mixer.data.decode import FORMATS, ImageError, TooLargeError, decode_image_bytes, image_header, read_image
from mlp_mixer.utils import limits


@pytest.mark.parametrize("in_channels", [1, 3])
def test_read_image_decodes_every_kind_or_names_the_file(odd_images, in_channels):
    for kind, (path, decodable) in odd_images.items():
        if decodable:
            image = read_image(path, in_channels)
            assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == in_channels, kind
        else:
            with pytest.raises(ImageError, match=path.split("/")[-1]):
                read_image(path, in_channels)


def test_sixteen_bit_keeps_the_top_byte(odd_images):
    image = read_image(odd_images["sixteen_bit"][0], 1)
    expected = torch.from_numpy((np.arange(300, dtype=np.int64).reshape(15, 20) * 200) >> 8).to(torch.uint8)
    assert torch.equal(image[0], expected)


# --- issue 25: EXIF orientation, the documented formats only, decoder-level pixel limits ---------------------------


def encoded(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_turns_the_picture_upright_as_pillow_does(fmt, orientation):
    """A phone's portrait photo (Orientation 6: stored sideways) decodes upright; the oracle is Pillow's
    ImageOps.exif_transpose. JPEG decodes through torchvision, the others through Pillow: both must agree."""
    from PIL import Image, ImageOps

    pixels = np.random.default_rng(orientation).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    options = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}

    def file_with(value: int) -> tuple[bytes, Image.Exif]:
        exif = Image.Exif()
        exif[0x0112] = value
        return encoded(Image.fromarray(pixels), fmt, exif=exif, **options), exif

    data, exif = file_with(orientation)
    upright = decode_image_bytes(data, 3, f"photo.{fmt.lower()}")
    assert upright.shape[1:] == ((24, 16) if orientation in (5, 6, 7, 8) else (16, 24))  # a quarter turn or not
    reference = np.array(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(upright.permute(1, 2, 0).numpy(), reference)
    # grey: libjpeg decodes luma itself, so the oracle is our own grey decode of the stored pixels, turned by Pillow
    stored = Image.fromarray(decode_image_bytes(file_with(1)[0], 1)[0].numpy())
    stored.info["exif"] = exif.tobytes()
    assert np.array_equal(decode_image_bytes(data, 1)[0].numpy(), np.array(ImageOps.exif_transpose(stored)))


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "PCX", "SGI", "QOI", "DDS"])
def test_only_the_documented_formats_are_read(fmt, tmp_path):
    """Pillow reads many more formats than the six the docs name; each is refused, by content, from the header:
    in read_image (train, eval, predict) and image_header (serve's check of an upload) alike."""
    from PIL import Image

    path = tmp_path / f"picture.{fmt.lower()}"
    path.write_bytes(encoded(Image.fromarray(np.zeros((8, 8, 3), np.uint8)), fmt))
    message = r"picture\.\w+: not an image in a format this reads \(JPEG, PNG, GIF, WEBP, BMP, TIFF\)"
    with pytest.raises(ImageError, match=message):
        read_image(path)
    with pytest.raises(ImageError, match=message):
        image_header(path.read_bytes(), path.name)
    assert FORMATS == ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")


def tiled_tiff(width: int, height: int, tile: int, data: bytes | None = None) -> bytes:
    """An RGB TIFF of ``width`` x ``height`` pixels stored as one ``tile`` x ``tile`` deflated tile (libtiff
    allocates the whole tile, whatever the canvas)."""
    data = zlib.compress(bytes(tile * tile * 3), 9) if data is None else data
    entries = [  # (tag, type, value): type 3 SHORT, 4 LONG; 324 TileOffsets is filled in below
        (256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 2), (277, 3, 3), (284, 3, 1),
        (322, 4, tile), (323, 4, tile), (324, 4, 0), (325, 4, len(data)),
    ]  # fmt: skip
    offset = 8 + 2 + 12 * len(entries) + 4
    ifd = b"".join(
        struct.pack("<HHI", tag, kind, 1)
        + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", offset if tag == 324 else value))
        for tag, kind, value in entries
    )
    return b"II*\x00" + struct.pack("<IH", 8, len(entries)) + ifd + b"\0\0\0\0" + data


def test_a_tile_larger_than_its_canvas_is_counted_against_the_pixel_limit(monkeypatch):
    """Pillow's pixel cap reads the canvas only: a TIFF declaring 1x1 pixels with one 24000² tile passed it and
    decoded to 1.7 GB. The decoder's tile counts now: refused from the header, in a few milliseconds."""
    from PIL import Image

    small = tiled_tiff(1, 1, 200)  # 40,000 pixels of tile behind one pixel of canvas
    assert Image.open(io.BytesIO(small)).size == (1, 1)
    assert decode_image_bytes(small).shape == (3, 1, 1)  # within the default limit: decoded as before
    monkeypatch.setattr(limits, "MAX_PIXELS", 10_000)
    with pytest.raises(TooLargeError, match=r"tile.tif: a 1x1 image whose decoder would hold a 200x200 tile"):
        decode_image_bytes(small, name="tile.tif")
    with pytest.raises(TooLargeError, match="200x200 tile"):
        image_header(small, "tile.tif")  # serve's header check sees it too
    monkeypatch.undo()
    bomb = tiled_tiff(1, 1, 24_000, data=zlib.compress(bytes(2**20)))  # the tile's first MiB only: ~1 KB
    start = time.perf_counter()
    with pytest.raises(TooLargeError, match=r"24000x24000 tile \(576,000,000 pixels\), over the limit of 67,108,864"):
        decode_image_bytes(bomb, name="bomb.tif")
    assert time.perf_counter() - start < 1
    tiled = tiled_tiff(64, 64, 64, zlib.compress(bytes(range(256)) * 48))  # an ordinary tiled TIFF still reads
    assert torch.equal(
        decode_image_bytes(tiled), torch.from_numpy(np.array(Image.open(io.BytesIO(tiled)))).permute(2, 0, 1)
    )


# --- the JPEG fast path: simplejpeg's libjpeg-turbo gives Pillow's pixels, or Pillow decides ---------------------


def _photo(height: int = 37, width: int = 51) -> np.ndarray:
    """Gradients plus grain, an odd size (partial MCUs on both edges)."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // width, yy * 255 // height, (xx * 7 + yy * 3) % 256], -1)
    noise = np.random.default_rng(0).normal(0, 12, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _pillow_only(monkeypatch, data: bytes, in_channels: int):
    """What decode_image_bytes gives with the fast path switched off: Pillow's decoder, as before simplejpeg."""
    import mlp_mixer.data.decode as decode

    with monkeypatch.context() as m:
        m.setattr(decode, "_turbo", lambda *args: None)
        try:
            return decode_image_bytes(data, in_channels, "photo.jpg")
        except ImageError as err:
            return type(err)


@pytest.mark.parametrize(
    "options",
    [{"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2}, {"subsampling": 2, "progressive": True},
     {"subsampling": 2, "optimize": True}, {"subsampling": 2, "restart_marker_blocks": 2}],
)  # fmt: skip
@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_jpeg_fast_path_gives_pillows_pixels(monkeypatch, options, mode, in_channels):
    """4:4:4, 4:2:2, 4:2:0, progressive, optimised and restart-marked JPEGs, colour and grey, read as RGB or as
    libjpeg's luma: bitwise Pillow's pixels, and the fast path is the one taken (simplejpeg is installed)."""
    import simplejpeg
    from PIL import Image

    import mlp_mixer.data.decode as decode

    image = Image.fromarray(_photo())
    data = encoded(image if mode == "RGB" else image.convert("L"), "JPEG", quality=87, **options)
    taken = []
    turbo = decode._turbo
    monkeypatch.setattr(decode, "_turbo", lambda *args: taken.append(1) or turbo(*args))
    fast = decode_image_bytes(data, in_channels, "photo.jpg")
    assert taken and turbo(data, Image.open(io.BytesIO(data)), in_channels) is not None
    assert simplejpeg.decode_jpeg_header(data)[:2] == (37, 51)
    monkeypatch.undo()
    assert fast.shape == (in_channels, 37, 51) and torch.equal(fast, _pillow_only(monkeypatch, data, in_channels))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no_end"])
def test_damaged_jpegs_are_decided_by_pillow_as_before(monkeypatch, damage):
    """simplejpeg is strict about damaged data: whatever it refuses, Pillow decodes or refuses as it always did."""
    from PIL import Image

    data = bytearray(encoded(Image.fromarray(_photo(64, 64)), "JPEG", quality=90))
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data[len(data) // 2 : len(data) // 2 + 40] = bytes(range(40))
    else:
        data = data[:-2]  # no EOI marker
    before = _pillow_only(monkeypatch, bytes(data), 3)
    try:
        now = decode_image_bytes(bytes(data), 3, "photo.jpg")
    except ImageError as err:
        now = type(err)
    assert (now is before) if isinstance(before, type) else torch.equal(now, before)


def test_decoded_images_are_views_of_hwc_memory():
    """(C, H, W) with channels_last strides: no transposing copy after the decoder; every value as before."""
    from PIL import Image

    data = encoded(Image.fromarray(_photo()), "PNG")
    image = decode_image_bytes(data)
    assert image.shape == (3, 37, 51) and image.permute(1, 2, 0).is_contiguous()
    assert np.array_equal(image.permute(1, 2, 0).numpy(), _photo())
