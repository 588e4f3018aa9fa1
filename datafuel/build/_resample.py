"""``build.resample``: a token shard set in, a semi-synthetic shard set and a report out.

Steps: check the source, resolve the prior (fitted n-gram, a local HF model, or any
:class:`~datafuel.synthetic.Prior`), resample each input shard as one engine unit
into ``out/.resample-work/shard-k.npy`` (resumable per shard), compare diversity on
a sample, then write the output shard set through the engine (manifest last).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import numpy as np

from datafuel._fs import atomic_write_json
from datafuel._lock import locked
from datafuel._version import __version__
from datafuel.engine import Engine
from datafuel.errors import ConfigError, CorruptShardError, SchemaError
from datafuel.loaders import Field, ShardSet, ragged
from datafuel.synthetic import (
    REPORT_NAME,
    NGramPrior,
    Prior,
    ResampleCounts,
    diversity_stats,
    format_report,
    load_hf_prior,
    resample_documents,
)
from datafuel.synthetic._resample import check_resample_args

from ._common import Progress, Timer, engine_for, make_summary, prepare_out, report
from ._remote_out import is_remote, run_remote

__all__ = ["resample", "resample_unit"]

SUMMARY_NAME = "resample_report.txt"
_WORK = ".resample-work"
#: Documents per output write unit.
_WRITE_DOCS = 4096


def _shard_docs(ds: ShardSet, field: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Shard ``k``'s token array and its document offsets (rows + 1), local to the shard."""
    ts = ds.token_stream(field)
    a, b = int(ds.offsets[k]), int(ds.offsets[k + 1])
    offs = ts.doc_starts[a : b + 1] - ts.shard_starts[k]
    return ds.field_array(field, k), np.asarray(offs, np.int64)


@dataclass
class _Job:
    """What every shard unit shares: the source, the prior, the knobs and the work folder."""

    source: str
    field: str
    work: str
    prior: Prior
    config_sha256: str
    threshold: float
    top_k: int
    temperature: float
    seed: int
    batch_tokens: int
    _src: ShardSet | None = dataclass_field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_src": None}  # workers open the memory maps themselves

    def src(self) -> ShardSet:
        if self._src is None:
            self._src = ShardSet(self.source)
        return self._src

    def paths(self, k: int) -> tuple[Path, Path]:
        return Path(self.work) / f"shard-{k:05d}.json", Path(self.work) / f"shard-{k:05d}.npy"


def _done_counts(job: _Job, k: int, tokens: int) -> ResampleCounts | None:
    rec_path, npy_path = job.paths(k)
    if rec_path.exists() and npy_path.exists():
        rec = json.loads(rec_path.read_text())
        if rec.get("config_sha256") == job.config_sha256 and rec.get("tokens") == tokens:
            return ResampleCounts(**rec["counts"])
    return None


def resample_unit(job: _Job, k: int) -> tuple[dict[str, int], int, bool]:
    """Resample input shard ``k`` into the work folder: ``(counts, documents, resumed)``."""
    src = job.src()
    data, offs = _shard_docs(src, job.field, k)
    n_docs = len(offs) - 1
    done = _done_counts(job, k, len(data))
    if done is not None:
        return done.__dict__, n_docs, True
    rec_path, npy_path = job.paths(k)
    tmp = Path(job.work) / f"shard-{k:05d}.tmp.npy"
    res = np.lib.format.open_memmap(tmp, mode="w+", dtype=data.dtype, shape=(len(data),))
    counts = ResampleCounts()
    d0, first = 0, int(src.offsets[k])
    while d0 < n_docs:  # documents until about batch_tokens tokens
        d1 = int(np.searchsorted(offs, offs[d0] + job.batch_tokens, side="right")) - 1
        d1 = min(max(d1, d0 + 1), n_docs)
        new, c = resample_documents(
            job.prior,
            [data[offs[i] : offs[i + 1]] for i in range(d0, d1)],
            threshold=job.threshold,
            top_k=job.top_k,
            temperature=job.temperature,
            seed=job.seed,
            first_index=first + d0,
        )
        if new:
            res[offs[d0] : offs[d1]] = np.concatenate(new)
        counts.add(c)
        d0 = d1
    res.flush()
    del res
    os.replace(tmp, npy_path)
    rec = {"config_sha256": job.config_sha256, "tokens": len(data), "counts": counts.__dict__}
    atomic_write_json(rec_path, rec)
    return counts.__dict__, n_docs, False


def _write_unit(job: _Job, payload: tuple[int, int, int]) -> dict[str, list[np.ndarray]]:
    """Documents ``[d0, d1)`` of input shard ``k``, read back from its resampled tokens."""
    k, d0, d1 = payload
    _, offs = _shard_docs(job.src(), job.field, k)
    res = np.load(job.paths(k)[1], mmap_mode="r", allow_pickle=False)
    return {job.field: [np.asarray(res[offs[i] : offs[i + 1]]) for i in range(d0, d1)]}


def _source(tokens_dir: str | os.PathLike[str], field: str) -> tuple[ShardSet, Field]:
    src = ShardSet(tokens_dir)
    spec = src.fields.get(field)
    if spec is None or spec.kind != "ragged" or spec.dtype not in ("uint16", "uint32"):
        raise SchemaError(
            f"{src.directory}: field {field!r} must be a ragged uint16/uint32 token field "
            f"(fields: {sorted(src.fields)}).",
            path=src.directory,
            field=field,
        )
    if "vocab_size" not in src.metadata or "eot_id" not in src.metadata:
        raise SchemaError(
            f"{src.directory / 'manifest.json'}: metadata needs vocab_size and eot_id "
            "(write token shards with datafuel build text).",
            path=src.directory / "manifest.json",
        )
    return src, spec


def _iter_docs(ds: ShardSet, field: str) -> Iterator[np.ndarray]:
    for k in range(ds.num_shards):
        data, offs = _shard_docs(ds, field, k)
        for i in range(len(offs) - 1):
            yield data[offs[i] : offs[i + 1]]


def _prior(
    prior: str | os.PathLike[str] | Prior,
    src: ShardSet,
    field: str,
    ngram_order: int,
    device: str | None,
) -> tuple[Prior, dict[str, Any]]:
    vocab_size, eot_id = int(src.metadata["vocab_size"]), int(src.metadata["eot_id"])
    if isinstance(prior, Prior):
        pr, desc = prior, prior.describe()
    elif str(prior) == "ngram":
        pr = NGramPrior.fit(
            _iter_docs(src, field), vocab_size=vocab_size, eot_id=eot_id, order=ngram_order
        )
        desc = pr.describe()
    else:
        pr = load_hf_prior(
            prior,
            vocab_size=vocab_size,
            eot_id=eot_id,
            tokenizer_sha256=src.provenance.get("tokenizer_sha256"),
            device=device,
        )
        desc = {**pr.describe(), "model_dir": str(prior)}
    if pr.vocab_size != vocab_size or pr.eot_id != eot_id:
        raise ConfigError(
            f"the prior has vocab_size={pr.vocab_size}, eot_id={pr.eot_id} but the shards have "
            f"vocab_size={vocab_size}, eot_id={eot_id}."
        )
    return pr, desc


def _finished(outdir: Path, config_sha256: str) -> dict[str, Any] | None:
    """The report of a finished run with the same configuration, if its output is whole."""
    if not ((outdir / "manifest.json").exists() and (outdir / REPORT_NAME).exists()):
        return None
    try:
        if ShardSet(outdir).provenance.get("config_sha256") != config_sha256:
            return None
        earlier: dict[str, Any] = json.loads((outdir / REPORT_NAME).read_text())
    except (CorruptShardError, SchemaError, ValueError):
        return None  # damaged: redo it
    earlier["resumed"] = "finished earlier; nothing to do"
    return earlier


def _sample(
    src: ShardSet, job: _Job, report_tokens: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Whole documents of about ``report_tokens`` tokens: originals and their resampled copies."""
    stream = src.token_stream(job.field)
    n_total = stream.num_documents
    order = np.random.default_rng([job.seed, 0x5EED]).permutation(n_total)
    lens = np.diff(stream.doc_starts)
    take = order[: max(1, int(np.searchsorted(np.cumsum(lens[order]), report_tokens)) + 1)]
    take = np.sort(take[lens[take] > 0]) if n_total else take
    shard_of = np.searchsorted(stream.shard_starts, stream.doc_starts[take], side="right") - 1
    maps = {
        k: np.load(job.paths(k)[1], mmap_mode="r", allow_pickle=False)
        for k in set(shard_of.tolist())
    }
    orig, semi = [], []
    for i, k in zip(take.tolist(), shard_of.tolist(), strict=True):
        a = int(stream.doc_starts[i] - stream.shard_starts[k])
        orig.append(stream.document(i).astype(np.int64))
        semi.append(np.asarray(maps[k][a : a + int(lens[i])], np.int64))
    return orig, semi


def _diversity(src: ShardSet, job: _Job, report_tokens: int) -> tuple[dict[str, Any], dict]:
    orig, semi = _sample(src, job, report_tokens)
    synth = job.prior.sample(
        [len(d) for d in orig],
        rng=np.random.default_rng([job.seed, 0xC011A95E]),
        top_k=job.top_k,
        temperature=job.temperature,
    )
    eot_id = int(src.metadata["eot_id"])
    stats = {
        name: diversity_stats(docs, reference=orig, eot_id=eot_id, prior=job.prior)
        for name, docs in (("original", orig), ("resampled", semi), ("synthetic", synth))
    }
    sample = {
        "documents": len(orig),
        "tokens": int(sum(len(d) for d in orig)),
        "synthetic": "sampled from the same prior with the same top-k and temperature, same document lengths",
    }
    return stats, sample


def _resample_all(
    runner: Engine, src: ShardSet, job: _Job, on_progress: Progress | None
) -> tuple[ResampleCounts, int]:
    """Every input shard through the engine: the summed counts and the shards resumed."""
    counts, resumed = ResampleCounts(), 0
    tick = report(on_progress, "resample", src.token_stream(job.field).num_documents)
    for c, n_docs, was_done in runner.map(
        resample_unit, range(src.num_shards), shared=job, chunk=1
    ):
        counts.add(ResampleCounts(**c))
        resumed += int(was_done)
        tick(n_docs)
    return counts, resumed


def _write_output(
    runner: Engine, src: ShardSet, job: _Job, spec: Field, outdir: Path, common: dict[str, Any]
) -> int:
    def payloads() -> Iterator[tuple[int, int, int]]:
        for k in range(src.num_shards):
            n_docs = int(src.offsets[k + 1] - src.offsets[k])
            for d0 in range(0, n_docs, _WRITE_DOCS):
                yield k, d0, min(d0 + _WRITE_DOCS, n_docs)

    manifest = runner.write_units(
        outdir,
        {job.field: ragged(spec.dtype)},
        _write_unit,
        payloads(),
        shared=job,
        shard_bytes=common["shard_bytes"],
        provenance=common["provenance"],
        metadata={**src.metadata, "resampled": True},
    )
    return int(manifest["total_rows"])


def _config(src: ShardSet, prior: Any, desc: dict[str, Any], knobs: dict[str, Any]) -> dict:
    return {
        "source_manifest_sha256": hashlib.sha256(
            (src.directory / "manifest.json").read_bytes()
        ).hexdigest(),
        "prior": desc if not isinstance(prior, Prior) else {"kind": desc.get("kind")},
        **knobs,
        "datafuel_version": __version__,
    }


def _provenance(src: ShardSet, config: dict[str, Any], desc: dict, cfg_hash: str) -> dict:
    provenance = {
        "source": str(src.directory),
        "source_manifest_sha256": config["source_manifest_sha256"],
        "stage": "synthetic",
        "method": "token resampling",
        "prior": desc.get("kind"),
        **{k: config[k] for k in ("threshold", "top_k", "temperature", "seed")},
        "config_sha256": cfg_hash,
    }
    for key in ("tokenizer", "tokenizer_sha256", "split"):
        if key in src.provenance:
            provenance[key] = src.provenance[key]
    return provenance


def _write_report(
    src: ShardSet,
    outdir: Path,
    desc: dict[str, Any],
    job: _Job,
    counts: ResampleCounts,
    resumed: int,
    stats: dict[str, Any],
    sample: dict[str, Any],
    laps: dict[str, float],
) -> dict[str, Any]:
    """The report (``resample_report.json`` and its human summary), written before the shards."""
    report_: dict[str, Any] = {
        "source": str(src.directory),
        "out": str(outdir),
        "method": "token resampling (ToEdit, Zhu et al. arXiv 2412.14689)",
        "prior": desc,
        "threshold": job.threshold,
        "top_k": job.top_k,
        "temperature": job.temperature,
        "seed": job.seed,
        "counts": counts.to_json(),
        "diversity": stats,
        "diversity_sample": sample,
        "shards_resumed": resumed,
        "seconds": dict(laps),
        "tokens_per_second": round(counts.tokens / laps["resample"], 1)
        if laps["resample"] > 0
        else None,
        "resumed": False,
    }
    atomic_write_json(outdir / REPORT_NAME, report_)
    (outdir / SUMMARY_NAME).write_text(format_report(report_) + "\n")
    return report_


def _summary(
    report_: dict[str, Any], outdir: Path, runner: Engine, src: ShardSet, timer: Timer
) -> dict[str, Any]:
    return make_summary(
        "resample",
        outdir,
        counts={str(src.provenance.get("split", "all")): int(report_["counts"]["documents"])},
        fitted={"prior": report_["prior"].get("kind")},
        skipped=0,
        engine=runner,
        seconds=timer.seconds(),
        report=report_,
        resumed=bool(report_.get("resumed")),
    )


def resample(
    inputs: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    engine: str | Engine | None = None,
    on_progress: Progress | None = None,
    prior: str | os.PathLike[str] | Prior = "ngram",
    threshold: float = 0.99,
    top_k: int = 8,
    temperature: float = 1.5,
    ngram_order: int = 3,
    field: str = "tokens",
    batch_tokens: int = 1 << 18,
    report_tokens: int = 50_000,
    shard_bytes: int = 64 << 20,
    device: str | None = None,
    overwrite: bool = False,
    stage_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Write a semi-synthetic copy of a token shard set, with the same document boundaries.

    One teacher-forced pass of a frozen prior gives ``P(x_i | x_<i)`` for every token
    (on the original prefix); tokens with ``P >= threshold`` are redrawn from the
    prior's ``top_k`` with weights ``p ** (1 / temperature)``; every other token, the
    first token of each document and every end-of-document token stay (Zhu et al.,
    "How to Synthesize Text Data without Model Collapse?", arXiv 2412.14689).

    Deterministic for a seed: document ``i`` uses a generator seeded by
    ``(seed, i)``, so the output does not depend on the engine or its threads.
    Resumable per shard: each finished input shard's tokens are kept in
    ``out/.resample-work`` and skipped on a rerun with the same arguments; the
    output shard set (manifest last) and the report are written once every shard is
    done. A finished output with the same arguments is returned as is. Nothing is
    split here (the input is one split already): there is no ``fractions``.

    Parameters
    ----------
    inputs
        A token shard set (``datafuel build text`` output, e.g. ``DIR/train``).
    prior
        ``"ngram"`` (fitted on the input's tokens, order ``ngram_order``), a local
        Hugging Face model directory (optional ``transformers`` extra), or any
        :class:`~datafuel.synthetic.Prior` (e.g. ``TorchPrior`` around your own model).
    report_tokens
        Size of the sample (whole documents, about this many tokens) on which the
        report compares original, resampled and a purely synthetic sample drawn from
        the same prior with the same top-k and temperature.
    overwrite
        ``out`` holding another kind of build is refused; ``True`` removes that build
        (only files datafuel wrote) first. A resample rerun resumes without it.

    Returns
    -------
    dict
        The common build summary; ``report`` is the resampling report (also written
        to ``out/resample_report.json``, with a human summary in
        ``out/resample_report.txt``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from datafuel import build
    >>> from datafuel.demo import sample_corpus_path
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = build.text([sample_corpus_path()], d / "text", vocab_size=512)
    >>> r = build.resample(d / "text" / "train", d / "resampled", seed=0, report_tokens=5000)
    >>> c = r["report"]["counts"]
    >>> 0 < c["fraction_changed"] <= c["fraction_above_threshold"] < 1
    True
    """
    if is_remote(out):  # a bucket: built in a local stage, uploaded as it is finished
        return run_remote(resample, locals())
    timer = Timer()
    check_resample_args(threshold, top_k, temperature)
    src, spec = _source(inputs, field)
    outdir = Path(out)
    if outdir.resolve() == src.directory.resolve():
        raise ConfigError(f"--out must differ from the input shard set {src.directory}.")
    knobs = {"threshold": float(threshold), "top_k": int(top_k), "temperature": float(temperature)}
    # one build at a time into out: a second gets LockedError naming this process
    with locked(outdir, "build"), engine_for(engine) as runner:
        prepare_out(outdir, "resample", overwrite=overwrite)
        pr, desc = _prior(prior, src, field, ngram_order, device)
        timer.lap("fit_prior")
        config = _config(
            src,
            prior,
            desc,
            {**knobs, "seed": int(seed), "field": field, "report_tokens": int(report_tokens)},
        )
        cfg_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
        earlier = _finished(outdir, cfg_hash)
        if earlier is not None:
            return _summary(earlier, outdir, runner, src, timer)
        work = outdir / _WORK
        work.mkdir(parents=True, exist_ok=True)
        job = _Job(
            os.path.abspath(src.directory), field, os.path.abspath(work), pr, cfg_hash,
            float(threshold), int(top_k), float(temperature), int(seed), int(batch_tokens),
        )  # fmt: skip
        counts, resumed = _resample_all(runner, src, job, on_progress)
        timer.lap("resample")
        stats, sample = _diversity(src, job, report_tokens)
        timer.lap("report")
        report_ = _write_report(src, outdir, desc, job, counts, resumed, stats, sample, timer.laps)
        common = {
            "shard_bytes": shard_bytes,
            "provenance": _provenance(src, config, desc, cfg_hash),
        }
        _write_output(runner, src, job, spec, outdir, common)
        timer.lap("write")
        shutil.rmtree(work, ignore_errors=True)
        report_["seconds"]["total"] = timer.seconds()["total"]
        return _summary(report_, outdir, runner, src, timer)
