"""``resample_shards``: a token shard set in, a semi-synthetic shard set and a report out."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from datafuel._fs import atomic_write_json
from datafuel._version import __version__
from datafuel.errors import ConfigError, CorruptShardError, SchemaError
from datafuel.loaders import ShardSet, ShardWriter, ragged

from ._diversity import diversity_stats
from ._hf import load_hf_prior
from ._ngram import NGramPrior
from ._prior import Prior
from ._resample import ResampleCounts, check_resample_args, resample_documents

__all__ = ["REPORT_NAME", "format_report", "resample_shards"]

REPORT_NAME = "resample_report.json"
SUMMARY_NAME = "resample_report.txt"
_WORK = ".resample-work"


def _shard_docs(ds: ShardSet, field: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Shard ``k``'s token array and its document offsets (rows + 1), local to the shard."""
    ts = ds.token_stream(field)
    a, b = int(ds.offsets[k]), int(ds.offsets[k + 1])
    offs = ts.doc_starts[a : b + 1] - ts.shard_starts[k]
    return ds.field_array(field, k), np.asarray(offs, np.int64)


def resample_shards(
    tokens_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    prior: str | os.PathLike[str] | Prior = "ngram",
    threshold: float = 0.99,
    top_k: int = 8,
    temperature: float = 1.5,
    seed: int = 0,
    ngram_order: int = 3,
    field: str = "tokens",
    batch_tokens: int = 1 << 18,
    report_tokens: int = 50_000,
    shard_bytes: int = 64 << 20,
    device: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write a semi-synthetic copy of a token shard set, with the same document boundaries.

    One teacher-forced pass of a frozen prior gives ``P(x_i | x_<i)`` for every token
    (on the original prefix); tokens with ``P >= threshold`` are redrawn from the
    prior's ``top_k`` with weights ``p ** (1 / temperature)``; every other token, the
    first token of each document and every end-of-document token stay (Zhu et al.,
    "How to Synthesize Text Data without Model Collapse?", arXiv 2412.14689).

    Deterministic for a seed: document ``i`` uses a generator seeded by
    ``(seed, i)``. Resumable per shard: each finished input shard's tokens are kept
    in ``out/.resample-work`` and skipped on a rerun with the same arguments; the
    output shard set (manifest last) and the report are written once every shard is
    done. A finished output with the same arguments is returned as is.

    Parameters
    ----------
    tokens_dir
        A token shard set (``datafuel build text`` output, e.g. ``DIR/train``).
    prior
        ``"ngram"`` (fitted on ``tokens_dir``'s tokens, order ``ngram_order``), a local
        Hugging Face model directory (optional ``transformers`` extra), or any
        :class:`Prior` (e.g. :class:`TorchPrior` around your own model).
    report_tokens
        Size of the sample (whole documents, about this many tokens) on which the
        report compares original, resampled and a purely synthetic sample drawn from
        the same prior with the same top-k and temperature.

    Returns
    -------
    dict
        The report (also written to ``out/resample_report.json``, with a human
        summary in ``out/resample_report.txt``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from datafuel.text import build_text, sample_corpus_path
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = build_text([sample_corpus_path()], d / "text", vocab_size=512)
    >>> r = resample_shards(d / "text" / "train", d / "resampled", seed=0, report_tokens=5000)
    >>> 0 < r["counts"]["fraction_changed"] <= r["counts"]["fraction_above_threshold"] < 1
    True
    """
    t0 = time.perf_counter()
    check_resample_args(threshold, top_k, temperature)
    src = ShardSet(tokens_dir)
    spec = src.fields.get(field)
    if spec is None or spec.kind != "ragged" or spec.dtype not in ("uint16", "uint32"):
        raise SchemaError(
            f"{src.directory}: field {field!r} must be a ragged uint16/uint32 token field "
            f"(fields: {sorted(src.fields)}).",
            path=src.directory,
            field=field,
        )
    meta = src.metadata
    if "vocab_size" not in meta or "eot_id" not in meta:
        raise SchemaError(
            f"{src.directory / 'manifest.json'}: metadata needs vocab_size and eot_id "
            "(write token shards with datafuel build text).",
            path=src.directory / "manifest.json",
        )
    vocab_size, eot_id = int(meta["vocab_size"]), int(meta["eot_id"])
    outdir = Path(out)
    if outdir.resolve() == src.directory.resolve():
        raise ConfigError(f"--out must differ from the input shard set {src.directory}.")

    # the prior
    if isinstance(prior, Prior):
        pr: Prior = prior
        prior_desc: dict[str, Any] = pr.describe()
    elif str(prior) == "ngram":
        pr = NGramPrior.fit(
            _iter_docs(src, field), vocab_size=vocab_size, eot_id=eot_id, order=ngram_order
        )
        prior_desc = pr.describe()
    else:
        pr = load_hf_prior(
            prior,
            vocab_size=vocab_size,
            eot_id=eot_id,
            tokenizer_sha256=src.provenance.get("tokenizer_sha256"),
            device=device,
        )
        prior_desc = {**pr.describe(), "model_dir": str(prior)}
    if pr.vocab_size != vocab_size or pr.eot_id != eot_id:
        raise ConfigError(
            f"the prior has vocab_size={pr.vocab_size}, eot_id={pr.eot_id} but the shards have "
            f"vocab_size={vocab_size}, eot_id={eot_id}."
        )
    t_fit = time.perf_counter() - t0

    src_manifest = hashlib.sha256((src.directory / "manifest.json").read_bytes()).hexdigest()
    config = {
        "source_manifest_sha256": src_manifest,
        "prior": prior_desc if not isinstance(prior, Prior) else {"kind": prior_desc.get("kind")},
        "threshold": float(threshold),
        "top_k": int(top_k),
        "temperature": float(temperature),
        "seed": int(seed),
        "field": field,
        "report_tokens": int(report_tokens),
        "datafuel_version": __version__,
    }
    cfg_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()

    # a finished run with the same config
    if (outdir / "manifest.json").exists() and (outdir / REPORT_NAME).exists():
        try:
            done = ShardSet(outdir)
            if done.provenance.get("config_sha256") == cfg_hash:
                earlier: dict[str, Any] = json.loads((outdir / REPORT_NAME).read_text())
                earlier["resumed"] = "finished earlier; nothing to do"
                return earlier
        except (CorruptShardError, SchemaError, ValueError):
            pass  # damaged: redo it
    work = outdir / _WORK
    work.mkdir(parents=True, exist_ok=True)

    # -- per input shard: resample into work/shard-k.npy, then a done record -------------
    counts = ResampleCounts()
    skipped = 0
    t1 = time.perf_counter()
    first_doc = 0
    for k in range(src.num_shards):
        data, offs = _shard_docs(src, field, k)
        n_docs = len(offs) - 1
        rec_path = work / f"shard-{k:05d}.json"
        npy_path = work / f"shard-{k:05d}.npy"
        if rec_path.exists() and npy_path.exists():
            rec = json.loads(rec_path.read_text())
            if rec.get("config_sha256") == cfg_hash and rec.get("tokens") == len(data):
                c = ResampleCounts(**rec["counts"])
                counts.add(c)
                skipped += 1
                first_doc += n_docs
                if on_progress is not None:
                    on_progress(n_docs)
                continue
        tmp = work / f"shard-{k:05d}.tmp.npy"
        res = np.lib.format.open_memmap(tmp, mode="w+", dtype=data.dtype, shape=(len(data),))
        shard_counts = ResampleCounts()
        d0 = 0
        while d0 < n_docs:
            # documents until about batch_tokens tokens
            d1 = int(np.searchsorted(offs, offs[d0] + batch_tokens, side="right")) - 1
            d1 = min(max(d1, d0 + 1), n_docs)
            docs = [data[offs[i] : offs[i + 1]] for i in range(d0, d1)]
            new, c = resample_documents(
                pr,
                docs,
                threshold=threshold,
                top_k=top_k,
                temperature=temperature,
                seed=seed,
                first_index=first_doc + d0,
            )
            if new:
                res[offs[d0] : offs[d1]] = np.concatenate(new)
            shard_counts.add(c)
            if on_progress is not None:
                on_progress(d1 - d0)
            d0 = d1
        res.flush()
        del res
        os.replace(tmp, npy_path)
        atomic_write_json(
            rec_path,
            {
                "config_sha256": cfg_hash,
                "tokens": len(data),
                "counts": {
                    "tokens": shard_counts.tokens,
                    "eligible": shard_counts.eligible,
                    "above": shard_counts.above,
                    "changed": shard_counts.changed,
                    "documents": shard_counts.documents,
                },
            },
        )
        counts.add(shard_counts)
        first_doc += n_docs
    t_resample = time.perf_counter() - t1

    # -- report on a sample of whole documents -------------------------------------------
    t2 = time.perf_counter()
    n_total = first_doc
    rng = np.random.default_rng([int(seed), 0x5EED])
    order = rng.permutation(n_total)
    stream = src.token_stream(field)
    lens = np.diff(stream.doc_starts)
    take = order[: max(1, int(np.searchsorted(np.cumsum(lens[order]), report_tokens)) + 1)]
    take = np.sort(take[lens[take] > 0]) if n_total else take
    shard_of_doc = np.searchsorted(stream.shard_starts, stream.doc_starts[take], side="right") - 1
    orig, semi = [], []
    maps = {
        k: np.load(work / f"shard-{k:05d}.npy", mmap_mode="r", allow_pickle=False)
        for k in set(shard_of_doc.tolist())
    }
    for i, k in zip(take.tolist(), shard_of_doc.tolist(), strict=True):
        a = int(stream.doc_starts[i] - stream.shard_starts[k])
        b = a + int(lens[i])
        orig.append(stream.document(i).astype(np.int64))
        semi.append(np.asarray(maps[k][a:b], np.int64))
    del maps
    synth = pr.sample(
        [len(d) for d in orig],
        rng=np.random.default_rng([int(seed), 0xC011A95E]),
        top_k=top_k,
        temperature=temperature,
    )
    stats = {
        name: diversity_stats(docs, reference=orig, eot_id=eot_id, prior=pr)
        for name, docs in (("original", orig), ("resampled", semi), ("synthetic", synth))
    }
    t_report = time.perf_counter() - t2

    report: dict[str, Any] = {
        "source": str(src.directory),
        "out": str(outdir),
        "method": "token resampling (ToEdit, Zhu et al. arXiv 2412.14689)",
        "prior": prior_desc,
        "threshold": float(threshold),
        "top_k": int(top_k),
        "temperature": float(temperature),
        "seed": int(seed),
        "counts": counts.to_json(),
        "diversity": stats,
        "diversity_sample": {
            "documents": len(orig),
            "tokens": int(sum(len(d) for d in orig)),
            "synthetic": "sampled from the same prior with the same top-k and temperature, same document lengths",
        },
        "shards_resumed": skipped,
        "seconds": {
            "fit_prior": round(t_fit, 3),
            "resample": round(t_resample, 3),
            "report": round(t_report, 3),
        },
        "tokens_per_second": round(counts.tokens / t_resample, 1) if t_resample > 0 else None,
        "resumed": False,
    }

    # -- the output shard set: the manifest comes last -----------------------------------
    provenance = {
        "source": str(src.directory),
        "source_manifest_sha256": src_manifest,
        "stage": "synthetic",
        "method": "token resampling",
        "prior": prior_desc.get("kind"),
        "threshold": float(threshold),
        "top_k": int(top_k),
        "temperature": float(temperature),
        "seed": int(seed),
        "config_sha256": cfg_hash,
    }
    for key in ("tokenizer", "tokenizer_sha256", "split"):
        if key in src.provenance:
            provenance[key] = src.provenance[key]
    atomic_write_json(outdir / REPORT_NAME, report)
    (outdir / SUMMARY_NAME).write_text(format_report(report) + "\n")
    with ShardWriter(
        outdir,
        {field: ragged(spec.dtype)},
        shard_bytes=shard_bytes,
        provenance=provenance,
        metadata={**meta, "resampled": True},
    ) as w:
        for k in range(src.num_shards):
            res = np.load(work / f"shard-{k:05d}.npy", mmap_mode="r", allow_pickle=False)
            _, offs = _shard_docs(src, field, k)
            n_docs = len(offs) - 1
            for d0 in range(0, n_docs, 4096):
                d1 = min(d0 + 4096, n_docs)
                w.write({field: [np.asarray(res[offs[i] : offs[i + 1]]) for i in range(d0, d1)]})
            del res
    shutil.rmtree(work, ignore_errors=True)
    report["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    return report


def _iter_docs(ds: ShardSet, field: str) -> Any:
    for k in range(ds.num_shards):
        data, offs = _shard_docs(ds, field, k)
        for i in range(len(offs) - 1):
            yield data[offs[i] : offs[i + 1]]


def format_report(report: dict[str, Any]) -> str:
    """A few human-readable lines summarising a resampling report."""
    c = report["counts"]
    lines = [
        f"resampled {c['tokens']:,} tokens in {c['documents']:,} documents with the "
        f"{report['prior'].get('kind', 'prior')} (threshold {report['threshold']}, top-k "
        f"{report['top_k']}, temperature {report['temperature']}, seed {report['seed']})",
        f"  above threshold: {100 * c['fraction_above_threshold']:.1f}% of editable tokens; "
        f"changed: {100 * c['fraction_changed']:.1f}%",
        f"  {'':10s} {'distinct-1':>10s} {'distinct-2':>10s} {'distinct-4':>10s} "
        f"{'top50-bigr':>10s} {'tail kept':>10s} {'tail share':>10s}  perplexity min/median/max",
    ]
    for name in ("original", "resampled", "synthetic"):
        s = report["diversity"][name]
        ppl = s.get("perplexity", {})
        lines.append(
            f"  {name:10s} {s['distinct_1']:10.4f} {s['distinct_2']:10.4f} {s['distinct_4']:10.4f} "
            f"{s['top50_bigram_share']:10.4f} {s.get('tail_types_kept', float('nan')):10.3f} "
            f"{s.get('tail_token_share', float('nan')):10.4f}  "
            f"{ppl.get('min', float('nan')):.2f}/{ppl.get('median', float('nan')):.2f}/{ppl.get('max', float('nan')):.2f}"
        )
    return "\n".join(lines)
