"""A full disk or a read-only output while shards are written.

``ShardWriter`` raises one ShardError (a DatafuelError that is also an OSError with the
original errno) naming the file and the reason in one line; ``abort`` never raises and
removes the partial shard; a rerun into the same directory gives the clean run's bytes.
Real ENOSPC/EROFS on a small tmpfs where mounting is allowed (root), and portably with
a patched ``open``.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datafuel.errors import DatafuelError, ShardError
from datafuel.loaders import ShardSet, ShardWriter, _writer, bytes_field, fixed
from datafuel.loaders._parts import write_shard

FIELDS = {"x": fixed("float32", (16,)), "jpeg": bytes_field()}
N = 400


def rows() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    return {
        "x": rng.normal(size=(N, 16)).astype(np.float32),
        "jpeg": [rng.bytes(int(k)) for k in rng.integers(100, 900, size=N)],
    }


def build(d: Path) -> dict[str, Any]:
    data = rows()
    with ShardWriter(d, FIELDS, shard_bytes=16 << 10) as w:
        for s in range(0, N, 50):
            w.write({k: v[s : s + 50] for k, v in data.items()})
    assert w.manifest is not None
    return w.manifest


def tree(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("clean") / "set"
    build(d)
    return tree(d)


def assert_one_line(exc: BaseException, reason: str, name: str) -> None:
    msg = str(exc)
    assert "\n" not in msg
    assert msg.startswith(f"{reason}: ") and msg.endswith(name), msg
    assert isinstance(exc, ShardError) and isinstance(exc, DatafuelError)
    assert isinstance(exc, OSError)


def no_partial_files(d: Path, failed: str) -> None:
    names = {p.name for p in d.iterdir()}
    assert "manifest.json" not in names
    shard = failed.split(".")[0]  # shard-00003
    assert not any(n.startswith(shard) for n in names), names
    assert not any(n.startswith(".") for n in names), names  # no temp files


# -- portable: a patched open whose file fails mid-shard ---------------------------------
class _FailingFile:
    """A real file that raises ``err`` once ``limit`` bytes were written (and on close)."""

    def __init__(self, path: str, err: int, limit: int) -> None:
        self.fh = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.err, self.limit, self.n = err, limit, 0

    def write(self, data: memoryview) -> int:
        if self.n + len(data) > self.limit:
            raise OSError(self.err, os.strerror(self.err))
        self.n += len(data)
        return self.fh.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)

    @property
    def closed(self) -> bool:
        return self.fh.closed

    def close(self) -> None:
        self.fh.close()
        raise OSError(self.err, os.strerror(self.err))  # as a buffered flush on close would


def patch_open(monkeypatch: pytest.MonkeyPatch, victim: str, err: int, limit: int = 100) -> None:
    real = open

    def fake(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if Path(path).name == victim:
            if limit < 0:
                raise OSError(err, os.strerror(err), str(path))
            return _FailingFile(str(path), err, limit)
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(_writer, "open", fake, raising=False)


def test_enospc_mid_shard_is_one_shard_error_and_the_partial_shard_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean: dict[str, bytes]
) -> None:
    d = tmp_path / "set"
    patch_open(monkeypatch, "shard-00003.jpeg.bin", errno.ENOSPC)
    with pytest.raises(ShardError) as info:
        build(d)  # the with block's __exit__ calls abort(): it must not raise again
    assert_one_line(info.value, "no space left on device", "shard-00003.jpeg.bin")
    assert info.value.errno == errno.ENOSPC and info.value.path == str(d / "shard-00003.jpeg.bin")
    assert info.value.__context__ is not None or info.value.__cause__ is not None
    no_partial_files(d, "shard-00003.jpeg.bin")
    assert (d / "shard-00002.jpeg.bin").exists()  # finished shards stay for the rerun
    monkeypatch.undo()
    build(d)  # the rerun into the same directory completes ...
    assert tree(d) == clean  # ... with the clean run's bytes
    ShardSet(d, verify=True)


@pytest.mark.parametrize(
    ("err", "reason"),
    [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")],
)
def test_unwritable_output_on_open_is_one_shard_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, reason: str
) -> None:
    d = tmp_path / "set"
    patch_open(monkeypatch, "shard-00000.jpeg.idx", err, limit=-1)
    with pytest.raises(ShardError) as info:
        build(d)
    assert_one_line(info.value, reason, "shard-00000.jpeg.idx")
    assert info.value.errno == err
    no_partial_files(d, "shard-00000.jpeg.idx")  # the .x and jpeg.bin opened before it went too


def test_abort_never_raises_and_can_run_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patch_open(monkeypatch, "shard-00000.jpeg.bin", errno.ENOSPC, limit=10)
    w = ShardWriter(tmp_path, FIELDS)
    data = rows()
    with pytest.raises(ShardError, match="no space left on device"):
        w.write({k: v[:5] for k, v in data.items()})
    w.abort()  # the failing file's close raises ENOSPC again: swallowed, file removed
    w.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_write_shard_on_a_full_disk_leaves_no_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patch_open(monkeypatch, "shard-00004.jpeg.bin", errno.ENOSPC)
    data = rows()
    with pytest.raises(ShardError, match=r"^no space left on device: .*shard-00004\.jpeg\.bin$"):
        write_shard(tmp_path, FIELDS, {k: v[:40] for k, v in data.items()}, shard=4)
    assert list(tmp_path.iterdir()) == []


def test_manifest_write_failure_is_one_shard_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Any, data: bytes, **_: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_writer, "atomic_write_bytes", full)
    with pytest.raises(ShardError) as info:
        build(tmp_path)
    assert_one_line(info.value, "no space left on device", "manifest.json")


# -- real: a small tmpfs, full and then read-only -----------------------------------------
@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): {exc}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def remount(mnt: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mnt)], check=True)


def test_real_enospc_on_a_full_tmpfs_then_rerun_after_space_is_freed(
    tmpfs: Path, clean: dict[str, bytes]
) -> None:
    d = tmpfs / "set"
    with pytest.raises(ShardError) as info:
        build(d)  # about 250 KB into 64 KB
    exc = info.value
    assert exc.errno == errno.ENOSPC
    assert str(exc).startswith("no space left on device: ") and "\n" not in str(exc)
    failed = Path(str(exc.path)).name
    assert failed.startswith("shard-")
    no_partial_files(d, failed)
    remount(tmpfs, "size=4m")
    build(d)
    assert tree(d) == clean


def test_real_read_only_tmpfs(tmpfs: Path, clean: dict[str, bytes]) -> None:
    (tmpfs / "set").mkdir()
    remount(tmpfs, "ro")
    with pytest.raises(ShardError) as info:
        build(tmpfs / "set")
    assert info.value.errno == errno.EROFS
    assert str(info.value) == f"read-only file system: {tmpfs / 'set' / 'shard-00000.x.bin'}"
    remount(tmpfs, "rw,size=4m")
    build(tmpfs / "set")
    assert tree(tmpfs / "set") == clean


def test_the_writer_never_writes_through_a_link(tmp_path: Path) -> None:
    from datafuel.loaders import ShardSet, ShardWriter, fixed

    first = tmp_path / "run1"
    with ShardWriter(first, {"x": fixed("int64")}) as w:
        w.write({"x": np.arange(5)})
    before = (first / "shard-00000.x.bin").read_bytes()
    copy = tmp_path / "run2"  # `cp -rs run1 run2`: a copy made of links into run1
    copy.mkdir()
    for p in first.iterdir():
        (copy / p.name).symlink_to(p)
    with ShardWriter(copy, {"x": fixed("int64")}) as w:
        w.write({"x": np.arange(7) * 10})
    assert (first / "shard-00000.x.bin").read_bytes() == before  # run1 untouched
    assert not (copy / "shard-00000.x.bin").is_symlink()
    assert ShardSet(copy, verify=True).gather([6])["x"].tolist() == [60]
    assert ShardSet(first, verify=True).gather([4])["x"].tolist() == [4]
