"""Near-duplicate images: edited copies of real photographs (scikit-learn's sample images)
are found; distinct photographs are not. imagehash is the oracle of the pHash bits."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from datafuel.dedup import HAMMING, hamming_pairs, image_clusters, image_keys, phash
from datafuel.errors import DecodeError

sk_datasets = pytest.importorskip("sklearn.datasets")
PHOTOS = sorted((Path(sk_datasets.__file__).parent / "images").glob("*.jpg"))  # china, flower


def _jpeg(img: Image.Image, quality: int = 90, exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def _exif_rotated(img: Image.Image) -> bytes:
    """The pixels turned a quarter, with the EXIF tag (orientation 6) that turns them back."""
    ex = Image.Exif()
    ex[0x0112] = 6
    return _jpeg(img.transpose(Image.Transpose.ROTATE_90), 92, ex.tobytes())


def _variants(img: Image.Image) -> dict[str, bytes]:
    w, h = img.size
    out = {f"q{q}": _jpeg(img, q) for q in (60, 75, 95)}
    for s in (0.5, 0.75, 1.5, 2.0):
        out[f"x{s}"] = _jpeg(img.resize((int(w * s), int(h * s)), Image.Resampling.BICUBIC))
    out["crop-left-5%"] = _jpeg(img.crop((int(w * 0.05), 0, w, h)))
    out["crop-border-5%"] = _jpeg(
        img.crop((int(w * 0.025), int(h * 0.025), int(w * 0.975), int(h * 0.975)))
    )
    for f in (0.8, 1.2):
        out[f"bright{f}"] = _jpeg(ImageEnhance.Brightness(img).enhance(f))
    shifted = np.clip(np.asarray(img).astype(np.int16) + 25, 0, 255).astype(np.uint8)
    out["shift+25"] = _jpeg(Image.fromarray(shifted))
    out["exif-rotated"] = _exif_rotated(img)
    return out


def _distinct() -> dict[str, Image.Image]:
    """The photographs and their quarters: ten images of different content."""
    out = {}
    for p in PHOTOS:
        img = Image.open(p).convert("RGB")
        out[p.stem] = img
        w, h = img.size
        for q, (x, y) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
            out[f"{p.stem}-q{q}"] = img.crop(
                (x * w // 2, y * h // 2, (x + 1) * w // 2, (y + 1) * h // 2)
            )
    return out


def test_photos_are_on_disk() -> None:
    assert len(PHOTOS) >= 2, "scikit-learn ships china.jpg and flower.jpg"


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.stem)
def test_edited_copies_of_a_photograph_are_found(photo: Path) -> None:
    img = Image.open(photo).convert("RGB")
    variants = _variants(img)
    base = phash(photo)
    far = {k: bin(phash(v) ^ base).count("1") for k, v in variants.items()}
    assert max(far.values()) <= HAMMING, far
    keys, hashes = zip(*[image_keys(photo), *map(image_keys, variants.values())], strict=True)
    c = image_clusters(list(keys), np.array(hashes, np.uint64), "near")
    assert (c.labels == 0).all()


def test_distinct_photographs_are_not_joined() -> None:
    imgs = _distinct()
    keys, hashes = zip(*[image_keys(_jpeg(i)) for i in imgs.values()], strict=True)
    c = image_clusters(list(keys), np.array(hashes, np.uint64), "near")
    assert c.to_json()["clusters"] == 0
    h = np.array(hashes, np.uint64)
    d = np.bitwise_count(h[:, None] ^ h[None, :])[np.triu_indices(len(h), 1)]
    assert d.min() > 2 * HAMMING  # a wide margin, not a near miss


def test_phash_bits_are_imagehash_phash() -> None:
    imagehash = pytest.importorskip("imagehash")
    for img in list(_distinct().values())[:6]:
        assert f"{phash(img):016x}" == str(imagehash.phash(img))


def test_exact_keys_see_pixels_not_files(tmp_path: Path) -> None:
    img = Image.open(PHOTOS[0]).convert("RGB").resize((64, 48))
    img.save(tmp_path / "a.png")
    img.save(tmp_path / "b.png", compress_level=1)  # other bytes, same pixels
    keys = [image_keys(tmp_path / n)[0] for n in ("a.png", "b.png")]
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()
    assert keys[0] == keys[1]
    assert image_keys(_jpeg(img, 90))[0] != keys[0]  # a lossy re-encode is a near duplicate only
    c = image_clusters([*keys, image_keys(_jpeg(img, 90))[0]], np.zeros(3, np.uint64), "exact")
    assert c.labels.tolist() == [0, 0, 2]


def test_a_corrupt_image_names_its_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DecodeError, match="bad.jpg"):
        phash(bad)


def test_hamming_pairs_compares_every_pair() -> None:
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, 3000, dtype=np.uint64)
    h[2999] = h[5] ^ np.uint64(0b1011)  # 3 bits from row 5
    i, j, d = hamming_pairs(h, 3, block=700)
    assert list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == [(5, 2999, 3)]
