"""Images: an exact key over the decoded pixels and a 64-bit DCT perceptual hash.

Both are taken after EXIF orientation, so a file and its rotated-by-tag copy agree.
The pHash is the one of Zauner (2010) that ``imagehash.phash`` computes: grayscale,
resized to 32 x 32 (Lanczos), 2-D DCT-II, the top-left 8 x 8 block, each bit set
where the coefficient exceeds the block's median. Near-duplicates are pairs within
a Hamming distance (default :data:`HAMMING`): re-encodes, resizes, small crops and
brightness shifts stay within it; distinct photographs are about 32 apart.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from datafuel.errors import DecodeError

__all__ = ["HAMMING", "hamming_pairs", "image_keys", "phash"]

#: default Hamming distance (of 64 bits) within which two images are near-duplicates
HAMMING = 10


def _open(source: str | os.PathLike[str] | bytes | Any) -> Any:
    import io

    from PIL import Image, ImageOps

    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            img = Image.open(io.BytesIO(bytes(source)))
        elif isinstance(source, (str, os.PathLike)):
            img = Image.open(source)
        else:
            img = source
        img.load()
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's decode errors
        where = source if isinstance(source, (str, os.PathLike)) else "<image bytes>"
        raise DecodeError(f"{where}: cannot decode the image ({exc}).", path=str(where)) from exc


def phash_of(img: Any) -> int:
    """The 64-bit pHash of an opened, oriented PIL image."""
    from PIL import Image
    from scipy.fft import dct

    g = img.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    pixels = np.asarray(g, dtype=np.float64)
    coef = dct(dct(pixels, axis=0), axis=1)[:8, :8]
    bits = (coef > np.median(coef)).reshape(-1)
    return int(np.packbits(bits).view(">u8")[0])


def phash(source: str | os.PathLike[str] | bytes | Any) -> int:
    """64-bit DCT pHash of an image file, its bytes, or a PIL image (EXIF-oriented).

    Bit ``63 - k`` is the ``k``-th of the 8 x 8 block in row-major order, so
    ``hex(phash(f))`` reads as ``str(imagehash.phash(Image.open(f)))`` does.
    """
    return phash_of(_open(source))


def image_keys(source: str | os.PathLike[str] | bytes | Any) -> tuple[bytes, int]:
    """``(exact key, pHash)`` of one image from one decode.

    The exact key is a 16-byte blake2b of the oriented image's mode, size and pixels:
    a PNG and a lossless re-save of it are equal, a JPEG re-encode is not.
    """
    img = _open(source)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{img.mode}:{img.size[0]}x{img.size[1]}:".encode())
    h.update(img.tobytes())
    return h.digest(), phash_of(img)


def hamming_pairs(
    hashes: np.ndarray, max_distance: int = HAMMING, block: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` whose hashes are within ``max_distance`` bits: ``(i, j, distance)``.

    Every pair is compared (popcount of the XOR, blocks of ``block`` rows), so it is
    exact; the cost is ``n**2 / 2`` word operations (50,000 images: a few seconds).
    """
    h = np.asarray(hashes, np.uint64)
    n = h.size
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    out_d: list[np.ndarray] = []
    for s in range(0, n, block):
        d = np.bitwise_count(h[s : s + block, None] ^ h[None, :])
        ii, jj = np.nonzero(d <= max_distance)
        ii = ii + s
        keep = jj > ii
        out_i.append(ii[keep])
        out_j.append(jj[keep])
        out_d.append(d[ii[keep] - s, jj[keep]].astype(np.int64))
    if not out_i:
        z = np.zeros(0, np.int64)
        return z, z, z
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)
