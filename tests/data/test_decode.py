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
