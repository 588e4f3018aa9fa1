"""``build.text``: documents -> split by document -> BPE fitted on train -> token shard sets.

Documents are read and routed on the driver (one stream in corpus order, so errors
name the file and line); the unit of work is about ``batch_chars`` characters of one
split's documents, encoded with the tokenizer fitted on the train split, so any
engine writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datafuel._fs import atomic_write_json
from datafuel._lock import locked
from datafuel._version import __version__
from datafuel.engine import Engine, ShardSink
from datafuel.errors import ConfigError, DatafuelError, InputDataError, TokenizerError
from datafuel.loaders import ShardSet, ragged
from datafuel.split import SPLIT_NAMES, check_fractions
from datafuel.text import BPETokenizer, Corpus, split_router, train_bpe
from datafuel.text._corpus import TxtMode

from ._common import (
    Progress,
    Timer,
    clear_split,
    engine_for,
    make_summary,
    prepare_out,
    report,
    write_split_record,
)
from ._dedup import DedupOutcome, check_keep, resolve_dedup, write_dedup_report
from ._remote_out import is_remote, run_remote

__all__ = ["SharedTokenizer", "text", "text_unit"]

TOKENIZER_NAME = "tokenizer.json"
_STATE = ".build-text.json"

_TOKENIZERS: dict[str, BPETokenizer] = {}  # per worker process: fingerprint -> tokenizer


class SharedTokenizer:
    """A tokenizer shipped to workers as its JSON, built once per worker process.

    Pickling a ``BPETokenizer`` rebuilds it on every task that receives it; this
    keeps the JSON (cheap to ship) and caches the built tokenizer by fingerprint.
    """

    def __init__(self, tokenizer: BPETokenizer) -> None:
        self.fingerprint = str(tokenizer.fingerprint)
        self.eot_token = str(tokenizer.eot_token)
        self.json = str(tokenizer.tokenizer.to_str())
        self._local: BPETokenizer | None = tokenizer

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_local": None}  # ship the JSON, not the tokenizer

    def get(self) -> BPETokenizer:
        if self._local is not None:  # the driver's own tokenizer, on the local engine
            return self._local
        tok = _TOKENIZERS.get(self.fingerprint)
        if tok is None:
            from tokenizers import Tokenizer

            tok = BPETokenizer(
                Tokenizer.from_str(self.json),
                eot_token=self.eot_token,
                fingerprint=self.fingerprint,
            )
            _TOKENIZERS.clear()  # one build at a time per worker: keep only the latest
            _TOKENIZERS[self.fingerprint] = tok
        return tok


def text_unit(shared: SharedTokenizer, texts: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """Encode a run of documents, each followed by the end-of-document id."""
    return {"tokens": shared.get().encode_batch(list(texts), append_eot=True)}


@dataclass
class _Plan:
    """One text build: its corpus, output, splits and the hash of its configuration."""

    corpus: Corpus
    outdir: Path
    names: list[str]
    split_of: Callable[[str], int]
    config: dict[str, Any]
    config_sha256: str
    given: BPETokenizer | None
    tokenizer_path: str | os.PathLike[str] | None
    state: dict[str, Any] = field(default_factory=dict)
    #: with dedup: each document's split (corpus order), -1 for one dropped
    doc_split: np.ndarray | None = None

    def splits(self) -> Iterator[tuple[str, int]]:
        """Every document of the corpus and its split (-1: dropped by dedup_keep="one")."""
        if self.doc_split is None:
            for t in self.corpus:
                yield t, self.split_of(t)
            return
        for k, t in enumerate(self.corpus):
            yield t, int(self.doc_split[k])

    @property
    def state_path(self) -> Path:
        return self.outdir / _STATE

    def no_documents(self) -> InputDataError:
        s = self.corpus.stats
        return InputDataError(
            f"the corpus in {', '.join(map(str, self.corpus.inputs))} has no non-empty documents "
            f"({s.files} file(s), {s.empty} empty document(s)).",
            path=self.corpus.inputs[0],
        )


def _plan(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    fractions: Sequence[float],
    seed: int,
    vocab_size: int | None,
    tokenizer: str | os.PathLike[str] | None,
    corpus_options: Mapping[str, Any],
    config: Mapping[str, Any],
) -> _Plan:
    if vocab_size is not None and tokenizer is not None:
        raise ConfigError(
            "give either vocab_size (train a tokenizer) or tokenizer (a file), not both."
        )
    if vocab_size is None and tokenizer is None:
        vocab_size = 8192
    fr = check_fractions(fractions)
    corpus = Corpus(inputs, **corpus_options)
    if not corpus.files:
        raise InputDataError(
            f"no .txt, .jsonl, .parquet, .arrow or .feather files in "
            f"{', '.join(map(str, corpus.inputs))}.",
            path=corpus.inputs[0],
        )
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    given = BPETokenizer.load(tokenizer) if tokenizer is not None else None
    files = corpus.file_stats()
    cfg = {
        "corpus": corpus.describe(),
        "file_stats": files,
        "vocab_size": vocab_size,
        "tokenizer_sha256": given.fingerprint if given else None,
        "split": list(fr),
        "seed": int(seed),
        **config,
        "datafuel_version": __version__,
    }
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
    names = [n for n, f in zip(SPLIT_NAMES, fr, strict=True) if f > 0]
    plan = _Plan(corpus, outdir, names, split_router(fr, seed), cfg, digest, given, tokenizer)
    if plan.state_path.exists():
        plan.state = json.loads(plan.state_path.read_text())
    return plan


def _finished(plan: _Plan) -> dict[str, Any] | None:
    """The summary of a finished build with the same configuration, if its output is whole."""
    st = plan.state
    if not (
        st.get("config_sha256") == plan.config_sha256
        and st.get("done")
        and (plan.outdir / TOKENIZER_NAME).exists()
    ):
        return None
    try:
        for n in plan.names:
            ShardSet(plan.outdir / n)
    except DatafuelError:  # a split is missing or damaged on disk: build again
        plan.state = {}
        return None
    return {**st["summary"], "resumed": True}


def _train(
    plan: _Plan, vocab_size: int, min_frequency: int, on_progress: Progress | None
) -> BPETokenizer:
    tick = report(on_progress, "train tokenizer", None)  # documents fed to the trainer

    def train_docs() -> Iterator[str]:
        for t, where in plan.splits():
            if where == 0:
                tick(1)
                yield t

    try:
        return train_bpe(train_docs(), vocab_size, min_frequency=min_frequency)
    except TokenizerError as exc:
        if plan.corpus.stats.documents == 0:
            raise plan.no_documents() from exc
        raise


def _check_given_tokenizer(
    tokenizer: str | os.PathLike[str] | None, out: str | os.PathLike[str], overwrite: bool
) -> None:
    """``--overwrite`` must not remove the tokenizer it was given to use (``out/tokenizer.json``)."""
    mine = Path(out) / TOKENIZER_NAME
    given = tokenizer is not None and mine.exists() and os.path.exists(tokenizer)
    if overwrite and given and os.path.samefile(tokenizer, mine):  # type: ignore[arg-type]
        raise ConfigError(
            f"--tokenizer {tokenizer} is the {TOKENIZER_NAME} of --out {out}, which "
            "--overwrite would remove before reading it; copy it elsewhere first.",
            path=str(tokenizer),
        )


def _tokenizer(
    plan: _Plan, min_frequency: int, on_progress: Progress | None = None
) -> tuple[BPETokenizer, bool]:
    """The tokenizer (given, trained earlier by an interrupted run, or trained now)."""
    path = plan.outdir / TOKENIZER_NAME
    if plan.given is not None:
        if not (path.exists() and os.path.samefile(plan.tokenizer_path, path)):  # type: ignore[arg-type]
            shutil.copyfile(plan.tokenizer_path, path)  # type: ignore[arg-type]
        return plan.given, False
    vocab_size = int(plan.config["vocab_size"])
    st = plan.state
    tok: BPETokenizer | None = None
    if (
        st.get("config_sha256") == plan.config_sha256
        and st.get("tokenizer_sha256")
        and path.exists()
    ):
        tok = BPETokenizer.load(path)
        if tok.fingerprint != st["tokenizer_sha256"]:  # the file changed under us: train again
            tok = None
    trained = tok is None
    if tok is None:
        tok = _train(plan, vocab_size, min_frequency, on_progress)
    fingerprint = tok.save(path)
    atomic_write_json(
        plan.state_path,
        {"config_sha256": plan.config_sha256, "tokenizer_sha256": fingerprint, "done": False},
    )
    return tok, trained


def _route(
    plan: _Plan,
    sinks: Mapping[str, ShardSink],
    batch_chars: int,
    on_progress: Progress | None,
) -> None:
    """Stream the corpus once, submitting about ``batch_chars`` characters per split unit."""
    pending: dict[str, list[str]] = {n: [] for n in plan.names}
    chars = dict.fromkeys(plan.names, 0)
    tick = report(on_progress, "read", None)
    for text, where in plan.splits():
        if where < 0:
            continue
        n = SPLIT_NAMES[where]
        pending[n].append(text)
        chars[n] += len(text)
        if chars[n] >= batch_chars:
            sinks[n].submit(pending[n])
            tick(len(pending[n]))
            pending[n], chars[n] = [], 0
    for n in plan.names:
        if pending[n]:
            sinks[n].submit(pending[n])
            tick(len(pending[n]))
    if plan.corpus.stats.documents == 0:
        raise plan.no_documents()  # before any manifest is written


def _encode(
    runner: Engine,
    plan: _Plan,
    tok: BPETokenizer,
    *,
    shard_bytes: int,
    batch_chars: int,
    on_progress: Progress | None,
) -> dict[str, dict[str, int]]:
    """Encode every split through the engine; documents and tokens per split."""
    provenance = {
        "source": [str(p) for p in plan.corpus.inputs],
        "stage": "text",
        "tokenizer": TOKENIZER_NAME,
        "tokenizer_sha256": tok.fingerprint,
        "split_method": "hash",
        "seed": plan.config["seed"],
        "config_sha256": plan.config_sha256,
    }
    metadata = {
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "eot_token": tok.eot_token,
        "token_dtype": str(tok.dtype),
    }
    shared = SharedTokenizer(tok)
    sinks: dict[str, ShardSink] = {}
    try:
        for n in plan.names:
            sinks[n] = runner.shard_sink(
                plan.outdir / n,
                {"tokens": ragged(str(tok.dtype))},
                text_unit,
                shared=shared,
                shard_bytes=shard_bytes,
                provenance={**provenance, "split": n},
                metadata=metadata,
            )
        _route(plan, sinks, batch_chars, on_progress)
        manifests = {n: sinks[n].close() for n in plan.names}
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    itemsize = np.dtype(tok.dtype).itemsize
    return {
        n: {
            "documents": int(m["total_rows"]),
            "tokens": sum(s["files"]["tokens"]["bin"]["bytes"] for s in m["shards"]) // itemsize,
        }
        for n, m in manifests.items()
    }


def _dedup_docs(plan: _Plan, method: str, keep: str, on_progress: Progress | None) -> DedupOutcome:
    """One pass over the corpus: exact keys (and MinHash signatures for ``near``), then clusters.

    Memory: 16 bytes per document (plus 512 for ``near``); the texts are not kept.
    """
    from datafuel.dedup import (
        Clusters,
        cluster_splits,
        key_labels,
        minhash_signatures,
        near_text_clusters,
        text_key,
    )

    tick = report(on_progress, "dedup", None)
    keys: list[bytes] = []
    which: list[int] = []
    sigs: list[np.ndarray] = []
    batch: list[str] = []
    for t in plan.corpus:
        keys.append(text_key(t))
        which.append(plan.split_of(t))
        if method == "near":
            batch.append(t)
            if len(batch) >= 4096:
                sigs.append(minhash_signatures(batch, seed=plan.config["seed"]))
                batch = []
        tick(1)
    if batch:
        sigs.append(minhash_signatures(batch, seed=plan.config["seed"]))
    exact = key_labels(np.array(keys, dtype="S16"))
    if method == "near" and sigs:
        clusters = near_text_clusters(exact, np.concatenate(sigs), seed=plan.config["seed"])
    else:
        clusters = Clusters(exact, "exact", {"normalize": "NFC, whitespace collapsed, case kept"})
    before = np.array(which, np.int64)
    after = cluster_splits(before, clusters.labels)
    outcome = DedupOutcome(clusters, before, after, keep)
    if outcome.found:
        plan.doc_split = np.where(outcome.kept, after, -1)
    return outcome


def _split_record(plan: _Plan, counts: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    return {
        "method": "hash",
        "unit": "document",
        # datafuel._hash.stable_fraction of the UTF-8 text (the wording of earlier builds)
        "hash": "blake2b-64 of the document's UTF-8 text keyed by the seed, mapped to [0, 1)",
        "seed": plan.config["seed"],
        "fractions": plan.config["split"],
        "counts": {n: counts[n]["documents"] if n in counts else 0 for n in SPLIT_NAMES},
        "tokens": {n: counts[n]["tokens"] if n in counts else 0 for n in SPLIT_NAMES},
        "total": sum(c["documents"] for c in counts.values()),
    }


def _summary(
    plan: _Plan,
    counts: Mapping[str, Mapping[str, int]],
    tok: BPETokenizer,
    trained: bool,
    runner: Engine,
    timer: Timer,
    dedup_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The build's summary, also kept in the state file (a rerun returns it as is)."""
    summary = make_summary(
        "text",
        plan.outdir,
        counts={n: c["documents"] for n, c in counts.items()},
        fitted={TOKENIZER_NAME: tok.fingerprint},
        skipped=plan.corpus.stats.empty,
        engine=runner,
        seconds=timer.seconds(),
        tokens={n: c["tokens"] for n, c in counts.items()},
        vocab_size=tok.vocab_size,
        eot_id=tok.eot_id,
        token_dtype=str(tok.dtype),
        tokenizer_sha256=tok.fingerprint,
        tokenizer_trained=trained,
        corpus=plan.corpus.stats.to_json(),
        dedup=dedup_info,
        resumed=False,
    )
    atomic_write_json(
        plan.state_path,
        {
            "config_sha256": plan.config_sha256,
            "tokenizer_sha256": tok.fingerprint,
            "done": True,
            "summary": summary,
            "config": plan.config,
        },
    )
    return summary


def text(
    inputs: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    engine: str | Engine | None = None,
    on_progress: Progress | None = None,
    vocab_size: int | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    text_field: str = "text",
    txt_mode: TxtMode = "file",
    shard_bytes: int = 64 << 20,
    min_frequency: int = 2,
    batch_chars: int = 1 << 22,
    overwrite: bool = False,
    dedup: str | None = None,
    dedup_keep: str = "all",
    stage_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Split documents, fit a byte-level BPE on the train split, write token shard sets.

    Writes ``out/train``, ``out/val``, ``out/test`` (splits whose fraction is 0 are
    skipped): shard sets with one ragged field ``"tokens"`` (uint16 when the
    vocabulary fits, else uint32), one row per document with the end-of-document id
    appended; plus ``out/tokenizer.json`` and ``out/split.json``. The manifest
    metadata holds ``vocab_size``, ``eot_id`` and ``eot_token``; its provenance holds
    ``tokenizer_sha256`` (sha256 of ``tokenizer.json``).

    Documents go to splits by a stable hash of their text
    (:func:`datafuel.text.assign_split`): whole documents, never split mid-document,
    and the corpus can grow without moving old documents. The tokenizer is trained on
    train-split documents only. Memory stays bounded: the corpus is streamed twice
    (train the tokenizer, then encode), never held. Rerunning with the same arguments
    and unchanged inputs reuses a finished build, or the tokenizer trained by an
    interrupted one.

    Parameters
    ----------
    inputs
        ``.txt`` / ``.jsonl`` / ``.parquet`` / ``.arrow`` / ``.feather`` files,
        directories of them, and ``datasets`` ``save_to_disk`` directories (the ``hf``
        extra); see :class:`datafuel.text.Corpus`. A table row is one document.
    out
        Output directory.
    fractions, seed
        Train/val/test fractions of documents and the hash salt.
    engine, on_progress
        Where encoding runs (``"local"`` threads, ``"ray"``, an Engine) and a
        ``(stage, n, total)`` progress callback (documents read and routed).
    vocab_size
        Train a tokenizer of this size (default 8192 when ``tokenizer`` is not given).
    tokenizer
        Use this ``tokenizer.json`` instead of training one (copied into ``out``).
    text_field, txt_mode
        Which ``.jsonl`` field or table column holds the text (a missing or non-string
        one, or a null, is refused naming the file and row); how ``.txt`` files are cut
        into documents.
    shard_bytes, batch_chars
        Target size of each shard; characters of one split per encode unit.
    overwrite
        ``out`` holding another kind of build is refused; ``True`` removes that build
        (only files datafuel wrote) first. A text rerun resumes without it.
    dedup, dedup_keep
        ``"exact"`` (the default: equal after Unicode NFC and whitespace collapsing,
        case kept), ``"near"`` (also MinHash LSH over word 5-grams, Jaccard >= 0.8;
        see :mod:`datafuel.dedup`) or ``"none"``. Each cluster goes to its first
        document's split; ``dedup_keep="one"`` writes only that document.
        ``dedup.json`` reports the clusters (see :mod:`datafuel.build._dedup`).

    Returns
    -------
    dict
        The common build summary (``counts``: documents per split) plus ``tokens``
        per split, the vocabulary, the corpus statistics and ``resumed``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from datafuel import build
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "c.jsonl").write_text("".join('{"text": "doc %d says hi"}\\n' % i for i in range(50)))
    >>> s = build.text([d / "c.jsonl"], d / "out", vocab_size=300, fractions=(0.8, 0.2, 0.0))
    >>> sorted(s["counts"]), s["counts"]["train"] + s["counts"]["val"]
    (['train', 'val'], 50)
    >>> from datafuel.loaders import ShardSet
    >>> ShardSet(d / "out" / "train").token_stream("tokens").num_documents == s["counts"]["train"]
    True
    """
    if is_remote(out):  # a bucket: built in a local stage, uploaded as it is finished
        return run_remote(text, locals())
    method, explicit = resolve_dedup(dedup, "text")
    check_keep(dedup_keep)
    # the default leaves the configuration (and so every manifest) as it was before dedup
    dedup_cfg = {} if (method, dedup_keep) == ("exact", "all") else {"dedup": [method, dedup_keep]}
    timer = Timer()
    # one build at a time into out: a second gets LockedError naming this process
    with locked(out, "build"), engine_for(engine) as runner:
        _check_given_tokenizer(tokenizer, out, overwrite)
        prepare_out(out, "text", overwrite=overwrite)
        plan = _plan(
            list(inputs),
            out,
            fractions=fractions,
            seed=seed,
            vocab_size=vocab_size,
            tokenizer=tokenizer,
            corpus_options={"text_field": text_field, "txt_mode": txt_mode},
            config={
                "shard_bytes": int(shard_bytes),
                "min_frequency": int(min_frequency),
                **dedup_cfg,
            },
        )
        earlier = _finished(plan)
        if earlier is not None:
            return earlier
        outcome = _dedup_docs(plan, method, dedup_keep, on_progress) if method != "none" else None
        timer.lap("dedup")
        tok, trained = _tokenizer(plan, min_frequency, on_progress)
        timer.lap("train_tokenizer")
        counts = _encode(
            runner,
            plan,
            tok,
            shard_bytes=shard_bytes,
            batch_chars=batch_chars,
            on_progress=on_progress,
        )
        timer.lap("encode")
        for name in set(SPLIT_NAMES) - set(plan.names):  # a split at fraction 0 this time
            clear_split(plan.outdir, name)
        record = _split_record(plan, counts)
        dedup_info = None
        if outcome is not None and (explicit or outcome.found):
            write_dedup_report(plan.outdir, outcome, kind="text", unit="document", describe=int)
            dedup_info = record["dedup"] = outcome.split_entry()
        write_split_record(plan.outdir, record)
        summary = _summary(plan, counts, tok, trained, runner, timer, dedup_info)
    return summary
