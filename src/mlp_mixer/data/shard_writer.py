"""The shard writer (``mlp-mixer shard``): any source ``train --data`` reads, written as WebDataset tar shards
with their ``index.json`` (:mod:`.shards` describes the format): files keep their original bytes, in-memory images
become PNG (with ``max_size``, images larger than it are stored resized, as JPEG); each shard is written
atomically and the index last.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from torch.utils.data import DataLoader, Dataset

from ..utils.files import atomic_write, write_json
from .decode import ImageError, decode_image_bytes, image_header, read_bytes
from .loader import worker_init
from .shards import DEFAULT_SHARD_SIZE, FORMAT, IMAGE_EXTS, INDEX_NAME, SPLITS, Record, is_shards, read_index
from .sources import load_splits

# --shard-size auto: shards of at most AUTO_MAX_BYTES (WebDataset's advice: 100 MB to 1 GB streams well), and at
# least AUTO_SHARDS of them where each still holds AUTO_MIN_IMAGES, so that up to AUTO_SHARDS readers each start on a
# shard of their own (more readers, or a smaller dataset: they split shards at the sample level).
AUTO_MAX_BYTES, AUTO_SHARDS, AUTO_MIN_IMAGES = 256 * 10**6, 64, 64

# --max-size: the shorter side bounded with Lanczos (Pillow's highest-quality downsampling) and re-encoded as JPEG at
# this quality (FFCV's default; the loss is below what RandomResizedCrop and RandAugment do to an image).
MAX_SIZE_QUALITY = 90


def bounded_size(height: int, width: int, max_size: int) -> tuple[int, int]:
    """(height, width) with the shorter side at most ``max_size``, the aspect ratio kept; never larger."""
    short = min(height, width)
    if short <= max_size:
        return height, width
    return max(1, round(height * max_size / short)), max(1, round(width * max_size / short))


def shrink(payload: bytes, max_size: int, in_channels: int, name: str = "image") -> bytes | None:
    """``payload`` resized so its shorter side is ``max_size`` (Lanczos) and re-encoded as JPEG at
    :data:`MAX_SIZE_QUALITY`, or None when it is no larger already (its bytes are then kept: never upscaled, never
    re-encoded for nothing). The EXIF block travels with it, so an orientation tag means what it meant."""
    import io

    from PIL import Image

    _, width, height = image_header(payload, name)
    new_h, new_w = bounded_size(height, width, max_size)
    if (new_h, new_w) == (height, width):
        return None
    with Image.open(io.BytesIO(payload)) as img:
        img.seek(0)
        exif = img.info.get("exif")
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: the top 8 bits, as decoding does
            img = img.point(lambda v: v / 256)
        small = img.convert("L" if in_channels == 1 else "RGB").resize((new_w, new_h), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=MAX_SIZE_QUALITY, **({"exif": exif} if exif else {}))
    return out.getvalue()


def auto_shard_size(images: int, mean_bytes: float) -> tuple[int, str]:
    """``--shard-size auto``: the images per shard for ``images`` of ``mean_bytes`` each, and why, in words."""
    total = images * mean_bytes
    by_bytes = math.ceil(total / AUTO_MAX_BYTES)
    shards = max(1, by_bytes, min(AUTO_SHARDS, images // AUTO_MIN_IMAGES))
    per = max(1, math.ceil(images / shards))
    shards = math.ceil(images / per) if images else 0
    each = per * mean_bytes
    size = (
        f"{shards} shard(s) of {per} images (~{each / 1e6:.3g} MB each)"
        if each >= 1e6
        else (f"{shards} shard(s) of {per} images (~{each / 1e3:.3g} KB each)")
    )
    if shards == 1:
        why = "the data fit in one shard; readers split it at the sample level"
    elif shards == by_bytes:
        why = f"at most {AUTO_MAX_BYTES // 10**6} MB a shard"
    else:
        why = (
            f"at least {AUTO_SHARDS} shards of at least {AUTO_MIN_IMAGES} images where the data allow, so that up to "
            f"{shards} readers each start on a shard of their own"
        )
    return per, f"{size}: {why}"


def parse_shard_size(text: str | int) -> tuple[int | None, int | None]:
    """``"1GB"``, ``"256MB"``, ``"500KB"`` -> (None, bytes); ``"1000"`` or 1000 -> (images, None); ``"auto"`` ->
    (None, None) (:func:`auto_shard_size` chooses)."""
    value = str(text).strip().upper().replace(" ", "")
    if value == "AUTO":
        return None, None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(KB|MB|GB|TB|B)?", value)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"--shard-size must be auto, a size like 1GB or 256MB, or a number of images, got {text!r}")
    if match[2] is None:
        if "." in match[1]:
            raise ValueError(f"--shard-size {text}: a number of images must be a whole number")
        return int(match[1]), None
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}[match[2]]
    return None, int(float(match[1]) * scale)


class _Peekable:
    def __init__(self, items: Iterable[Record]) -> None:
        self._items, self._next = iter(items), None

    def peek(self) -> Record | None:
        if self._next is None:
            self._next = next(self._items, None)
        return self._next

    def pop(self) -> Record | None:
        item, self._next = self.peek(), None
        return item


def write_split(
    records: Iterable[Record], out: str | Path, split: str, max_images: int | None, max_bytes: int | None
) -> list[dict[str, Any]]:
    """Write ``records`` to ``out/{split}-000000.tar``, ... and return the index entries of the shards.

    Each shard is written atomically (a temporary file renamed when complete), so a killed run leaves whole shards
    and no index (the index is written last, by :func:`write_index`). A shard is closed before the image that
    would take it past ``max_images`` or ``max_bytes`` (a shard holds at least one image).
    """
    import webdataset

    out, pending, entries = Path(out), _Peekable(records), []
    while pending.peek() is not None:
        entry: dict[str, Any] = {"name": f"{split}-{len(entries):06d}.tar", "images": 0}

        def fill(f: IO[bytes], entry: dict[str, Any] = entry) -> None:
            writer = webdataset.TarWriter(f, encoder=False, mtime=0)  # mtime 0: the same input, the same bytes
            try:
                while (record := pending.peek()) is not None:
                    key, ext, payload, label = record
                    full = max_images is not None and entry["images"] >= max_images
                    full |= max_bytes is not None and entry["images"] and f.tell() + len(payload) + 2048 > max_bytes
                    if full:
                        break
                    writer.write({"__key__": key, ext: payload, "cls": str(label).encode()})
                    entry["images"] += 1
                    pending.pop()
            finally:
                writer.close()  # the tar's end blocks (a failed shard's temporary file is deleted by atomic_write)

        path = atomic_write(out / entry["name"], fill)
        entry["bytes"] = path.stat().st_size
        entries.append(entry)
    return entries


def write_index(
    out: str | Path, meta: dict[str, Any], splits: dict[str, dict[str, Any]], replace: bool = False
) -> dict[str, Any]:
    """Write ``out/index.json``: ``meta`` (classes, in_channels, kind, native_size, source) and ``splits``
    (``{split: {"images", "skipped", "shards": [{"name", "images", "bytes"}]}}``). Splits already in the index
    that are not rewritten are kept, when the classes agree (``mlp-mixer shard --split val`` after ``--split
    train``)."""
    path = Path(out) / INDEX_NAME
    kept: dict[str, Any] = {}
    if path.is_file() and not replace:
        old = read_index(path)
        if old.get("classes") == meta["classes"] and old.get("format") == FORMAT:
            kept = {k: v for k, v in old.get("splits", {}).items() if k not in splits}
    index = {"format": FORMAT, "version": 1, **meta, "splits": {**kept, **splits}}
    write_json(path, index)
    return index


class _EncodedImages(Dataset):
    """``(extension, bytes, label)`` of each image of a dataset, or ``(None, reason)`` for a file that does not
    decode: files keep their original bytes (checked by decoding them, as training would); in-memory images
    (MNIST, CIFAR) are encoded as PNG, which is lossless. With ``max_size``, an image whose shorter side is larger
    is stored resized as JPEG (:func:`shrink`)."""

    def __init__(self, dataset: Dataset, max_size: int | None = None) -> None:
        self.dataset, self.max_size = dataset, max_size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        if self.dataset.in_memory:
            from torchvision.io import encode_png

            png = encode_png(self.dataset.images[index].contiguous()).numpy().tobytes()
            small = self.max_size and shrink(png, self.max_size, self.dataset.images.shape[1])
            return (
                ("jpg", small, int(self.dataset.labels[index]))
                if small
                else ("png", png, int(self.dataset.labels[index]))
            )
        try:
            if hasattr(self.dataset, "encoded"):  # bytes kept with their dataset (Hugging Face)
                payload, path, label = self.dataset.encoded(index)
            else:
                path, label = self.dataset.samples[index]
                payload = read_bytes(path)
            decode_image_bytes(payload, self.dataset.in_channels, path)
            small = self.max_size and shrink(payload, self.max_size, self.dataset.in_channels, str(path))
        except ImageError as err:
            return None, str(err)
        if small:
            return "jpg", small, label
        ext = Path(path).suffix.lower().lstrip(".")
        if ext not in IMAGE_EXTS:  # a name without a known extension: the format's
            ext = image_header(payload, path)[0].lower()
        return ("jpg" if ext == "jpeg" else ext), payload, label


def _mean_bytes(encoded: _EncodedImages, samples: int = 32) -> float:
    """The mean stored size of an image, from up to ``samples`` spread over the dataset (readable ones)."""
    n = len(encoded)
    sizes = [len(item[1]) for i in range(0, n, max(1, n // samples)) if (item := encoded[i])[0] is not None]
    return sum(sizes) / len(sizes) if sizes else 0.0


def _as_is(item: Any) -> Any:
    return item


def write_shards(
    source: str | Path | None,
    out: str | Path,
    split: str | None = None,
    shard_size: str | int = DEFAULT_SHARD_SIZE,
    val_fraction: float = 0.1,
    in_channels: int | None = None,
    workers: int = 0,
    progress: bool = True,
    max_size: int | None = None,
) -> dict[str, Any]:
    """Write any source ``train --data`` reads as WebDataset shards with ``index.json`` (``mlp-mixer shard``).

    Each split's images are written in an order shuffled with a fixed seed (a folder is sorted by class: shards
    of one class each would make a poor stream), ``shard_size`` images or bytes per shard; files keep their
    original bytes, in-memory images become PNG. Images that do not decode are skipped and counted.

    Args:
        source: a folder, CIFAR folder or Hugging Face dataset, as ``--data``; None or ``"embedded"`` for the
            embedded MNIST digits.
        out: the folder of the shards and their index (created).
        split: ``"train"`` or ``"val"`` alone; None for both. Writing one split keeps the other in the index.
        shard_size: ``"auto"`` (:func:`auto_shard_size`: the index says what it chose and why), ``"1GB"``,
            ``"256MB"``, or a number of images.
        val_fraction: held out of a folder without ``val/`` (per class, fixed seed: the split training uses).
        in_channels: decode-check files with this many channels; None infers it.
        workers: DataLoader processes reading and checking the files.
        progress: a progress bar per split.
        max_size: store each image whose shorter side is larger already resized to this (Lanczos, JPEG at
            :data:`MAX_SIZE_QUALITY`; smaller ones keep their bytes), recorded in the index as ``max_size``. Fixes the
            largest resolution the shards can train at, and re-encodes once; it saves decoding and resizing
            full-size photos at every epoch. None: the original bytes.

    Returns:
        The index written.
    """
    from tqdm import tqdm

    max_images, max_bytes = parse_shard_size(shard_size)
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1):
        raise ValueError(f"--max-size must be a whole number of pixels of at least 1, got {max_size!r}")
    data = None if source is None or str(source) == "embedded" else source
    if data is not None and not str(data).startswith("hf:") and not Path(str(data).split("?")[0]).exists():
        raise FileNotFoundError(f"SRC {data} does not exist (a folder, a CIFAR folder, or 'embedded')")
    if is_shards(data):
        raise ValueError(f"{source} is already shards (it holds or names {INDEX_NAME})")
    if split is not None and split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    splits = load_splits(data, val_fraction, in_channels)
    if splits.train.streamed:
        raise ValueError(f"{source}: a stream cannot be written as shards here; read it whole (drop streaming=1)")
    written = {}
    for name in [split] if split else list(SPLITS):
        dataset = splits.train if name == "train" else splits.val
        order = list(range(len(dataset)))
        random.Random(f"shard-write-{name}").shuffle(order)
        encoded = _EncodedImages(dataset, max_size)
        loader = DataLoader(
            encoded,
            batch_size=None,
            sampler=order,
            num_workers=workers,
            collate_fn=_as_is,
            worker_init_fn=worker_init,
        )
        skipped: list[str] = []
        bar = tqdm(total=len(order), desc=f"{name} shards", unit="img", disable=not progress, leave=False)

        def records(loader: DataLoader = loader, skipped: list[str] = skipped, bar: Any = bar, name: str = name):
            for position, item in enumerate(loader):
                bar.update(1)
                if item[0] is None:
                    skipped.append(item[1])
                    continue
                ext, payload, label = item
                yield f"{name}-{position:08d}", ext, payload, label

        per_shard, chosen = max_images, None
        if max_images is None and max_bytes is None:
            per_shard, chosen = auto_shard_size(len(order), _mean_bytes(encoded))
        entries = write_split(records(), out, name, per_shard, max_bytes)
        bar.close()
        written[name] = {
            **({"shard_size": chosen} if chosen else {}),
            "images": sum(e["images"] for e in entries),
            "skipped": len(skipped),
            "skipped_files": sorted(skipped),
            "shards": entries,
        }
    native = splits.native_size and bounded_size(*splits.native_size, max_size or max(splits.native_size))
    meta = {
        "source": str(source) if data is not None else "embedded MNIST digits",
        "kind": splits.kind,
        "classes": list(splits.classes),
        "in_channels": splits.in_channels,
        "native_size": list(native) if native else None,
        **(
            {"max_size": {"shorter_side": max_size, "resample": "lanczos", "jpeg_quality": MAX_SIZE_QUALITY}}
            if max_size
            else {}
        ),  # fmt: skip
    }
    return write_index(out, meta, written)
