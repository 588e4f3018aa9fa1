"""Where a build runs: this process (``local``, the default) or a Ray cluster (``ray``).

``datafuel build table|images|text ... --engine ray [--ray-address ADDR]`` runs the
per-record work of a build as Ray tasks and writes **the same bytes** as the local
engine: every shard file and ``manifest.json`` identical, for every build kind.

How (the canonical order and the cut):

* Records have a canonical order, the local engine's: table rows in split order,
  image files in sorted listing order (split order within a split), documents in
  corpus order (files in sorted order, lines in file order). Work units are
  consecutive runs of records in that order: 65,536 table rows, 256 image files,
  one split's documents of about ``batch_chars`` characters (the local encode batch).
* The local engine runs units on a thread pool in this process and feeds one
  :class:`~datafuel.loaders.ShardWriter` in unit order; it is the default, not a
  special case: every build writes through an engine. Its sinks report each shard
  as the writer finishes it (``on_shard``): a build into a bucket uploads it then.
* A Ray unit task does the per-record work (recipe transform and one-hot; full decode
  and optional re-encode; BPE encoding) and returns its rows to the object store and
  each row's data bytes to the driver. The driver cuts shards exactly where
  :class:`~datafuel.loaders.ShardWriter` would (:class:`ShardCutter`: a shard closes
  once its data reaches ``shard_bytes``, a function of the rows only), and a write
  task writes shard ``k`` from its rows into the output directory
  (:func:`~datafuel.loaders.write_shard`, temp folder + rename). The driver writes
  the manifest once, last (:func:`~datafuel.loaders.write_manifest`). Into a bucket
  (``shard_sink(..., upload=ShardUpload(url))``, a build with ``--out s3://...``) a
  write task writes shard ``k`` on its worker's disk and uploads it itself, returning
  the files' sizes and sha256: the driver's directory receives only the manifest, and
  no filesystem is shared; the workers use their own environment's credentials.
* The fits that need the whole train split run on the driver, exactly as in the
  local build, so the fitted state is identical: the recipe (sparse-row rule,
  KNN donors, winsorization quantiles, scaler statistics) and the BPE tokenizer
  (``tokenizer.json`` byte-identical). What is distributed is the per-record work
  that dominates the time: transforms, image decoding/re-encoding, tokenization,
  shard writing.
* Reading: table inputs are read on the driver (the split and the fit need the whole
  table); documents are streamed on the driver (hash split; errors name the same
  file and line); image files are read by the workers.

Failures: a unit or write task that raises a :class:`~datafuel.errors.DatafuelError`
(a corrupt image, a NaN reaching a shard) re-raises that error on the driver, with
the same class and message naming the file or row as the local build. A task whose
worker dies is re-run by Ray (``max_retries``); tasks are pure functions of their
inputs and write with temp + rename, so a retry rewrites identical bytes and never
duplicates rows. Ray is optional: ``pip install 'datafuel[ray]'``.

Examples
--------
>>> import numpy as np, tempfile
>>> from datafuel.engine import get_engine
>>> from datafuel.loaders import fixed
>>> def square(shared, rows):
...     return {"x": np.arange(*rows, dtype=np.int64) ** shared}
>>> with get_engine("local") as engine:
...     m = engine.write_units(tempfile.mkdtemp(), {"x": fixed("int64")}, square,
...                            [(0, 3), (3, 5)], shared=2, shard_bytes=16)
>>> m["total_rows"], [s["rows"] for s in m["shards"]]
(5, [2, 2, 1])
"""

from __future__ import annotations

from ._base import Engine, RowsCallback, ShardCallback, ShardSink, ShardUpload, UnitFn
from ._local import LocalEngine
from ._plan import ShardCutter, ShardPlan, unit_ranges
from ._ray import RayEngine
from ._select import ENGINES, get_engine

__all__ = [
    "ENGINES",
    "Engine",
    "LocalEngine",
    "RayEngine",
    "RowsCallback",
    "ShardCallback",
    "ShardCutter",
    "ShardPlan",
    "ShardSink",
    "ShardUpload",
    "UnitFn",
    "get_engine",
    "unit_ranges",
]
