"""``datafuel inspect``: schema, shard count, rows and bytes of a shard set (and, for an
image set, which PIL would decode it)."""

from __future__ import annotations

import click

from datafuel.build._profile import build_root_error, open_shard_set, shard_set_location
from datafuel.errors import ManifestError
from datafuel.loaders import ShardSet
from datafuel.loaders._remote import is_remote

from ._common import cache_options, echo_json


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def _open(path: str, verify: bool, cache_dir: str | None, cache_limit: int | None) -> ShardSet:
    """The set at ``path``: a bucket URL through the cache; a local one (refusing cache
    options) with "did you mean OUT/train" on a build's output root."""
    if is_remote(path) or cache_dir is not None or cache_limit is not None:
        return open_shard_set(path, verify=verify, cache_dir=cache_dir, cache_limit=cache_limit)
    try:
        return ShardSet(path, verify=verify)
    except ManifestError as exc:
        hint = build_root_error(path)
        if hint is None:
            raise
        raise hint from exc


@click.command("inspect")
@click.argument("shards_dir", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--verify",
    is_flag=True,
    help="Check every file's sha256 against the manifest (a bucket URL: download every "
    "file through the cache).",
)
@cache_options
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON object.")
def inspect_cmd(
    shards_dir: str,
    verify: bool,
    cache_dir: str | None,
    cache_limit: int | None,
    as_json: bool,
) -> None:
    """Print the schema, shard count, rows and bytes of SHARDS_DIR (with --verify, check checksums).

    SHARDS_DIR may be a bucket URL (s3://bucket/prefix, gs://, az://, https://): the
    manifest is read from the bucket, and --verify downloads every file into the
    node's cache (--cache-dir, --cache-limit) and checks it. For a set of encoded
    images it also names the active PIL (pillow-simd, or stock Pillow with how to
    restore pillow-simd).
    """
    ds = _open(shards_dir, verify, cache_dir, cache_limit)
    where = shard_set_location(ds, shards_dir)
    images = any(f.kind == "bytes" for f in ds.fields.values())
    info = {
        "path": where,
        "format_version": ds.manifest["version"],
        "rows": len(ds),
        "shards": ds.num_shards,
        "bytes": ds.nbytes,
        "fields": {n: f.to_json() for n, f in ds.fields.items()},
        "provenance": ds.provenance,
        "metadata": ds.metadata,
        "verified": verify,
    }
    if images:
        from datafuel.vision import pil_build

        info["pil"] = pil_build()
    if as_json:
        echo_json(info)
        return
    click.echo(f"{where}: {len(ds)} rows in {ds.num_shards} shard(s), {_human(ds.nbytes)}")
    click.echo("fields:")
    for name, spec in ds.fields.items():
        shape = f" shape={list(spec.shape)}" if spec.kind == "fixed" else ""
        click.echo(f"  {name:<16} {spec.kind:<7} {spec.dtype}{shape}")
    for key, value in sorted(ds.provenance.items()):
        click.echo(f"provenance.{key}: {value}")
    for key, value in sorted(ds.metadata.items()):
        text = str(value)
        click.echo(f"metadata.{key}: {text if len(text) < 200 else text[:197] + '...'}")
    if images:
        from datafuel.vision._cpu import pil_build_line

        click.echo(pil_build_line())
    if verify:
        click.echo("verify: every checksum matches")
