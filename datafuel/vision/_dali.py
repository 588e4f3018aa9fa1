"""DALI backend: the same :class:`ImageSpec` run by an NVIDIA DALI pipeline.

The pipeline is ``external_source`` (encoded bytes, per-sample crop window, flip,
angle) -> ``decoders.image_slice`` (DALI's image decoder restricted to the crop's
region: ``mixed``, i.e. nvJPEG, when CUDA is available; ``cpu`` with
``device_id=None`` otherwise; EXIF orientation applied) -> ``resize`` of the exact,
sub-pixel box (what ``fn.random_resized_crop`` does inside) -> ``flip`` -> ``rotate``.

The crop window, flip and angle are drawn by datafuel from ``(seed, epoch, index)``
(:func:`~datafuel.vision.sample_params`), not by DALI's own generator, so the DALI
backend crops exactly where the CPU backend does and a resumed run repeats itself.
The only per-image Python work is reading the header (size, EXIF orientation).
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from datafuel._checks import check_int
from datafuel.errors import ConfigError, DecodeError, SchemaError

from ._decode import PIL_ERRORS, decode_image, image_info, open_image, orientation, oriented_size
from ._folder import image_field_of
from ._params import sample_params
from ._spec import ImageSpec

__all__ = ["DALITransform", "dali_available", "dali_unavailable_reason"]

#: formats DALI's decoder reads (Pillow's names); anything else is transcoded to PNG first.
DALI_FORMATS = frozenset({"JPEG", "PNG", "BMP", "TIFF", "JPEG2000", "WEBP", "PPM"})
#: Pillow modes DALI decodes to the same RGB as Pillow does
_DALI_MODES = frozenset({"RGB", "L", "RGBA", "LA"})


def dali_unavailable_reason() -> str | None:
    """Why the DALI backend cannot run here, or ``None`` when it can.

    >>> from datafuel.vision import dali_available, dali_unavailable_reason
    >>> dali_available() == (dali_unavailable_reason() is None)
    True
    """
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as exc:
        return f"nvidia-dali is not installed ({exc}); pip install nvidia-dali-cuda120"
    return None


def dali_available() -> bool:
    """Whether the DALI backend can run here (``nvidia.dali`` imports).

    ``if dali_available():`` reads as it should; :func:`dali_unavailable_reason` says
    why not.
    """
    return dali_unavailable_reason() is None


def _transcode(data: bytes, what: str) -> tuple[bytes, int, int]:
    """Decode with Pillow and re-encode as PNG (RGB, orientation applied): for inputs DALI can't read alike."""
    arr = decode_image(data, what=what)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue(), arr.shape[1], arr.shape[0]


class DALITransform:
    """The loader's per-batch transform run by NVIDIA DALI.

    Parameters
    ----------
    spec
        What to do to each image (:class:`ImageSpec`); same output as
        :class:`CPUTransform`: ``{"image": uint8 (B, size, size, 3), "label": int64 (B,)}``.
    device
        ``"cpu"`` (decode with libjpeg-turbo, ``device_id=None``) or ``"mixed"`` (nvJPEG
        on the GPU; the image output is then a CUDA ``torch.Tensor``). Default: mixed
        when ``torch.cuda.is_available()``.
    batch_size
        The pipeline's maximum batch; larger batches are run in pieces.
    num_threads
        DALI's CPU threads (default: all cores).
    image_field, label_field, seed
        As in :class:`CPUTransform`.

    Building the pipeline takes a few seconds; build one transform and reuse it.
    Calls are serialised (one pipeline); DALI parallelises inside a batch.
    """

    def __init__(
        self,
        spec: ImageSpec,
        *,
        device: str | None = None,
        batch_size: int = 256,
        num_threads: int | None = None,
        device_id: int | None = None,
        image_field: str | None = None,
        label_field: str | None = "label",
        seed: int = 0,
    ) -> None:
        reason = dali_unavailable_reason()
        if reason is not None:
            raise ConfigError(f"the DALI backend needs NVIDIA DALI: {reason}.")
        if not isinstance(spec, ImageSpec):
            raise ConfigError(
                f"spec must be a datafuel.vision.ImageSpec. Got {type(spec).__name__}."
            )
        import torch

        if device is None:
            device = "mixed" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "mixed"):
            raise ConfigError(f"device must be 'cpu' or 'mixed'. Got {device!r} instead.")
        if device == "mixed" and not torch.cuda.is_available():
            raise ConfigError(
                "device='mixed' decodes on the GPU, but torch.cuda.is_available() is False."
            )
        check_int("batch_size", batch_size)
        self.spec = spec
        self.device = device
        self.batch_size = batch_size
        self.num_threads = int(num_threads or os.cpu_count() or 1)
        self.device_id = (device_id or 0) if device == "mixed" else None
        self.image_field = image_field
        self.label_field = label_field
        self.seed = int(seed)
        out_spec = dict(spec.output_spec)
        if label_field is not None:
            out_spec["label"] = ("int64", ())
        self.output_spec: Mapping[str, tuple[str, tuple[int, ...]]] = out_spec
        self._lock = threading.Lock()
        self._pipe: Any = self._build()

    def __repr__(self) -> str:
        return f"DALITransform({self.spec!r}, device={self.device!r}, batch_size={self.batch_size})"

    def _build(self) -> Any:
        from nvidia.dali import fn, pipeline_def
        from nvidia.dali import types as dali_types

        types: Any = dali_types  # DALI's type stubs miss its enum members

        spec = self.spec
        decoder = "mixed" if self.device == "mixed" else "cpu"

        @pipeline_def(  # type: ignore[misc]
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=self.device_id,  # type: ignore[arg-type]  # None: CPU-only pipeline
            prefetch_queue_depth=1,
            exec_async=False,
            exec_pipelined=False,
        )
        def pipeline() -> Any:
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            anchor = fn.external_source(name="anchor", dtype=types.INT32, ndim=1)
            shape = fn.external_source(name="shape", dtype=types.INT32, ndim=1)
            roi_start = fn.external_source(name="roi_start", dtype=types.FLOAT, ndim=1)
            roi_end = fn.external_source(name="roi_end", dtype=types.FLOAT, ndim=1)
            # decode only the crop's pixels (libjpeg-turbo / nvJPEG region decode), then resize
            # the exact (sub-pixel) box inside it
            img: Any = fn.decoders.image_slice(
                encoded,
                anchor,
                shape,
                device=decoder,
                output_type=types.RGB,
                normalized_anchor=False,
                normalized_shape=False,
                axis_names="WH",
            )
            img = fn.resize(
                img,
                size=[spec.size, spec.size],
                roi_start=roi_start,
                roi_end=roi_end,
                roi_relative=False,
                interp_type=types.INTERP_LINEAR,
                antialias=True,
            )
            if spec.flip_p:
                flip = fn.external_source(name="flip", dtype=types.INT32, ndim=0)
                img = fn.flip(img, horizontal=flip, vertical=0)
            if spec.max_degrees:
                angle = fn.external_source(name="angle", dtype=types.FLOAT, ndim=0)
                img = fn.rotate(
                    img, angle=angle, keep_size=True, fill_value=0, interp_type=types.INTERP_LINEAR
                )
            return img

        pipe = pipeline()
        pipe.build()
        return pipe

    def _prepare(
        self, data: bytes, seed: int, epoch: int, idx: int, what: str
    ) -> tuple[np.ndarray, Any]:
        im = open_image(data, what=what)
        with im:
            fmt, mode = im.format, im.mode
            orient = orientation(im)
            w, h = oriented_size(im, orient)
        if fmt not in DALI_FORMATS or (
            mode not in _DALI_MODES and not (fmt == "JPEG" and mode == "CMYK")
        ):
            data, w, h = _transcode(data, what)
        p = sample_params(self.spec, w, h, seed, epoch, idx, self.seed)
        return np.frombuffer(data, np.uint8), (p, w, h)

    def __call__(self, batch: Mapping[str, Any], info: Any) -> dict[str, Any]:
        field = self.image_field if self.image_field is not None else image_field_of(batch)
        try:
            items = batch[field]
        except KeyError:
            raise SchemaError(
                f"the batch has no field {field!r} (fields: {sorted(batch)}).", field=field
            ) from None
        indices = np.asarray(info.indices).reshape(-1)
        n = len(items)
        if len(indices) != n:
            raise SchemaError(f"BatchInfo has {len(indices)} indices for a batch of {n} images.")
        parts = []
        for start in range(0, n, self.batch_size):
            stop = min(n, start + self.batch_size)
            parts.append(
                self._run(
                    items[start:stop], indices[start:stop], int(info.seed), int(info.epoch), field
                )
            )
        if self.device == "mixed":
            import torch

            image: Any = parts[0] if len(parts) == 1 else torch.cat(parts)
            if self.spec.normalize is not None:
                mean = torch.tensor(self.spec.normalize.mean, device=image.device)
                std = torch.tensor(self.spec.normalize.std, device=image.device)
                image = (image.float() - mean) / std
        else:
            image = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if self.spec.normalize is not None:
                image = (
                    image.astype(np.float32) - np.asarray(self.spec.normalize.mean, np.float32)
                ) / np.asarray(self.spec.normalize.std, np.float32)
        result: dict[str, Any] = {"image": image}
        if self.label_field is not None:
            if self.label_field not in batch:
                raise SchemaError(
                    f"the batch has no field {self.label_field!r}.", field=self.label_field
                )
            result["label"] = np.asarray(batch[self.label_field], dtype=np.int64).reshape(n)
        return result

    def _run(self, items: Any, indices: np.ndarray, seed: int, epoch: int, field: str) -> Any:
        encoded, anchors, shapes, starts, ends, flips, angles = [], [], [], [], [], [], []
        for data, idx in zip(items, indices.tolist(), strict=True):
            what = f"sample {idx} (field {field!r})"
            try:
                arr, (p, w, h) = self._prepare(data, seed, epoch, idx, what)
            except DecodeError as exc:
                exc.row, exc.field, exc.indices = idx, field, [idx]
                raise
            except PIL_ERRORS as exc:
                raise DecodeError(
                    f"{what}: cannot read ({exc}).", row=idx, field=field, indices=[idx]
                ) from exc
            x0, y0, x1, y1 = p.box
            ax, ay = math.floor(x0), math.floor(y0)
            bx, by = min(w, math.ceil(x1)), min(h, math.ceil(y1))
            encoded.append(arr)
            anchors.append(np.array([ax, ay], np.int32))
            shapes.append(np.array([bx - ax, by - ay], np.int32))
            starts.append(np.array([y0 - ay, x0 - ax], np.float32))  # DALI order: (y, x)
            ends.append(np.array([y1 - ay, x1 - ax], np.float32))
            flips.append(np.array(int(p.flip), np.int32))
            angles.append(np.array(p.angle, np.float32))
        with self._lock:
            pipe = self._pipe
            try:
                pipe.feed_input("encoded", encoded)
                pipe.feed_input("anchor", anchors)
                pipe.feed_input("shape", shapes)
                pipe.feed_input("roi_start", starts)
                pipe.feed_input("roi_end", ends)
                if self.spec.flip_p:
                    pipe.feed_input("flip", flips)
                if self.spec.max_degrees:
                    pipe.feed_input("angle", angles)
                (out,) = pipe.run()
            except RuntimeError as exc:
                self._pipe = self._build()  # a failed run can leave the pipeline unusable
                self._raise_decode_error(items, indices, exc, field)
            if self.device == "mixed":
                import torch
                from nvidia.dali.plugin.pytorch import feed_ndarray

                tensor = out.as_tensor()
                dst = torch.empty(
                    tensor.shape(), dtype=torch.uint8, device=f"cuda:{self.device_id}"
                )
                feed_ndarray(tensor, dst)
                return dst
            return np.array(out.as_array(), copy=True)

    def _raise_decode_error(
        self, items: Any, indices: np.ndarray, exc: BaseException, field: str
    ) -> None:
        for data, idx in zip(items, indices.tolist(), strict=True):
            what = f"sample {idx} (field {field!r})"
            try:
                info = image_info(data, what=what)
            except DecodeError as bad:
                bad.row, bad.field, bad.indices = idx, field, [idx]
                raise bad from exc
            del info
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DecodeError(
            f"DALI failed on the batch with samples {indices[:10].tolist()}: {first}",
            field=field,
            indices=indices.tolist(),
        ) from exc
