"""Image thumbnails for uploaded files (docs/protocol.md §10, "Files"), made with Pillow.

`make_thumbnail` is a pure module-level function the process pool runs: it reads the stored
upload from disk and writes the thumbnail next to it, so the pool pickles two paths instead of
megabytes of image. It never raises for a bad image: it answers a `Thumbnail` whose `problem`
says why there is none, so a hostile upload costs one failed job and nothing else.

Decompression bombs: an image's size is read from its header before any pixel is decoded, and
an image of more than `max_pixels` pixels is refused there (a 100 KB PNG can claim 100,000 x
100,000 pixels, 40 GB once decoded). Only the four formats the server serves inline are even
tried, which keeps Pillow's many other decoders out of reach of uploads.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from PIL import Image

__all__ = ["FORMATS", "MAX_PIXELS", "MAX_SIDE", "Thumbnail", "make_thumbnail"]

MAX_SIDE = 320
# 50 megapixels covers the photos of every phone camera we know of; past it a PNG would need
# 200 MB of worker memory to decode (JPEGs decode at 1/8 scale and cost far less).
MAX_PIXELS = 50_000_000
# Pillow's format name -> the content type the server serves the original with.
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
_JPEG_QUALITY = 85


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """What became of one image: a thumbnail's content type, or the problem that stopped it.

    `image_type` is the original's content type as Pillow decoded it; it, `width` and `height`
    (as the header declares them) are None and 0 when the header was unreadable.
    """

    content_type: str | None
    image_type: str | None = None
    width: int = 0
    height: int = 0
    problem: str = ""


def make_thumbnail(
    source: str, target: str, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS
) -> Thumbnail:
    """Write a thumbnail of the image at `source` to `target`, at most `max_side` pixels on
    either side, turned upright by its EXIF orientation: a PNG for images with transparency,
    PNGs and GIFs, a JPEG otherwise. Refuses images over `max_pixels` before decoding them."""
    try:
        with warnings.catch_warnings():
            # Pillow warns about large images itself; our own, lower cap is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=list(FORMATS)) as image:
                return _thumbnail(image, target, max_side, max_pixels)
    except Image.DecompressionBombError:
        return Thumbnail(None, problem="the image is too large to decode")
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError):
        # Truncated, corrupt or unsupported data: Pillow signals it with any of these.
        return Thumbnail(None, problem="the image could not be decoded")


def _thumbnail(image: Image.Image, target: str, max_side: int, max_pixels: int) -> Thumbnail:
    width, height = image.size
    image_type = FORMATS[str(image.format)]
    if width * height > max_pixels:
        return Thumbnail(None, image_type, width, height,
                         f"{width}x{height} pixels is over the limit of {max_pixels}")
    # Read before resizing: the EXIF block travels with the file, not with resized copies.
    transpose = _ORIENTATION.get(image.getexif().get(_EXIF_ORIENTATION, 1))
    keep_alpha = image.format in ("PNG", "GIF") or _has_alpha(image)
    # JPEG: decode at the smallest 1/2..1/8 scale still larger than the thumbnail.
    image.draft("RGB", (max_side, max_side))
    frame = image.convert("RGBA" if keep_alpha else "RGB")
    frame.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if transpose is not None:
        frame = frame.transpose(transpose)
    kind = "PNG" if keep_alpha else "JPEG"
    partial = target + ".part"
    with open(partial, "wb") as out:
        if kind == "PNG":
            frame.save(out, "PNG", optimize=True)
        else:
            frame.save(out, "JPEG", quality=_JPEG_QUALITY)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, target)  # readers never see half a thumbnail
    return Thumbnail("image/png" if kind == "PNG" else "image/jpeg", image_type, width, height)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transposition that turns the image upright (ImageOps.exif_transpose
# would do it on the full-size image; we do it on the thumbnail, which is far cheaper).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
