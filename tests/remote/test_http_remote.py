"""A shard set served over plain HTTP (read-only ``https://``/``http://`` sets): a static
file server on 127.0.0.1 serving a local set's directory."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from datafuel.errors import ConfigError, ManifestError
from datafuel.loaders import Loader, write_shards
from datafuel.loaders._remote import ObjectStore


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    rng = np.random.default_rng(3)
    write_shards(
        root / "sets" / "train",
        x=rng.normal(size=(900, 4)).astype(np.float32),
        id=np.arange(900),
        shard_bytes=4000,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/sets", root / "sets" / "train"
    finally:
        server.shutdown()
        server.server_close()


def test_loader_reads_a_set_over_http(served, tmp_path):
    base, local = served
    r = Loader(f"{base}/train", batch_size=64, seed=2, cache_dir=tmp_path / "c")
    loc = Loader(local, batch_size=64, seed=2, shuffle="shards", shuffle_window=r.sampler.window)
    got = [b["id"].numpy() for b in r]
    want = [b["id"].numpy() for b in loc]
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert sorted(np.concatenate(got).tolist()) == list(range(900))


def test_http_sets_are_read_only_and_a_missing_one_is_named(served, tmp_path):
    base, _ = served
    with pytest.raises(ConfigError, match="read-only"):
        ObjectStore(f"{base}/train").put_bytes("x", b"1")
    with pytest.raises(ManifestError, match=rf"{base}/nothing/manifest.json: no manifest"):
        Loader(f"{base}/nothing", batch_size=4, cache_dir=tmp_path)
