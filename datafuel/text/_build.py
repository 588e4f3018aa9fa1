"""``build_text``: documents -> split by document -> BPE fitted on train -> token shard sets."""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from datafuel._fs import atomic_write_json
from datafuel._version import __version__
from datafuel.errors import ConfigError, DatafuelError, InputDataError, TokenizerError
from datafuel.loaders import ShardSet, ShardWriter, ragged
from datafuel.split import SPLIT_NAMES, check_fractions

from ._corpus import Corpus, TxtMode
from ._encode import encode_documents
from ._tokenizer import BPETokenizer, train_bpe

__all__ = ["assign_split", "build_text"]

TOKENIZER_NAME = "tokenizer.json"
SPLIT_RECORD = "split.json"
_STATE = ".build-text.json"


def _cumulative(fractions: Sequence[float]) -> list[float]:
    fr = check_fractions(fractions)
    return [fr[0], fr[0] + fr[1]]


def _hash_unit(text: str, seed: int) -> float:
    key = int(seed).to_bytes(8, "little", signed=True)
    h = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=key).digest()
    return int.from_bytes(h, "little") / 2.0**64


def assign_split(text: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int = 0) -> str:
    """The split a document goes to: a stable hash of its text, salted by ``seed``.

    The same document lands in the same split on every run and however the corpus
    grows or is reordered; exact duplicates never straddle two splits.

    >>> assign_split("hello", (1.0, 0.0, 0.0))
    'train'
    """
    cum = _cumulative(fractions)
    return SPLIT_NAMES[bisect.bisect_right(cum, _hash_unit(text, seed))]


def _config(corpus: Corpus, **kwargs: Any) -> tuple[dict[str, Any], str]:
    files = []
    for f in corpus.files:
        st = f.stat()
        files.append([str(f), st.st_size, st.st_mtime_ns])
    cfg = {"corpus": corpus.describe(), "file_stats": files, **kwargs}
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
    return cfg, digest


def build_text(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    vocab_size: int | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    text_field: str = "text",
    txt_mode: TxtMode = "file",
    shard_bytes: int = 64 << 20,
    min_frequency: int = 2,
    batch_chars: int = 1 << 22,
    on_progress: Callable[[int], None] | None = None,
    engine: Any = None,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Split documents, fit a byte-level BPE on the train split, write token shard sets.

    Writes ``out/train``, ``out/val``, ``out/test`` (splits whose fraction is 0 are
    skipped): shard sets with one ragged field ``"tokens"`` (uint16 when the
    vocabulary fits, else uint32), one row per document with the end-of-document id
    appended; plus ``out/tokenizer.json`` and ``out/split.json``. The manifest
    metadata holds ``vocab_size``, ``eot_id`` and ``eot_token``; its provenance holds
    ``tokenizer_sha256`` (sha256 of ``tokenizer.json``).

    Documents go to splits by a stable hash of their text (:func:`assign_split`):
    whole documents, never split mid-document, and the corpus can grow without
    moving old documents. The tokenizer is trained on train-split documents only.
    Memory stays bounded: the corpus is streamed twice (train the tokenizer, then
    encode), never held. Rerunning with the same arguments and unchanged inputs
    reuses a finished build, or the tokenizer trained by an interrupted one.

    Parameters
    ----------
    inputs
        ``.txt`` / ``.jsonl`` files and directories (see :class:`datafuel.text.Corpus`).
    out
        Output directory.
    vocab_size
        Train a tokenizer of this size (default 8192 when ``tokenizer`` is not given).
    tokenizer
        Use this ``tokenizer.json`` instead of training one (copied into ``out``).
    split, seed
        Train/val/test fractions and the hash salt.
    text_field, txt_mode
        Which ``.jsonl`` field holds the text; how ``.txt`` files are cut into documents.
    shard_bytes
        Target size of each shard.
    on_progress
        Called with the number of documents just written (for progress bars).

    Returns
    -------
    dict
        A JSON-able summary: documents and tokens per split, vocabulary, timings.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "c.jsonl").write_text("".join('{"text": "doc %d says hi"}\\n' % i for i in range(50)))
    >>> s = build_text([d / "c.jsonl"], d / "out", vocab_size=300, split=(0.8, 0.2, 0.0))
    >>> sorted(s["splits"]), s["splits"]["train"]["documents"] + s["splits"]["val"]["documents"]
    (['train', 'val'], 50)
    >>> from datafuel.loaders import ShardSet
    >>> ShardSet(d / "out" / "train").token_stream("tokens").num_documents == s["splits"]["train"]["documents"]
    True
    """
    runner = None
    if engine is not None or ray_address is not None:
        from datafuel.engine import get_engine  # refuse a missing Ray before any work

        runner = get_engine(engine, ray_address=ray_address)
    t0 = time.perf_counter()
    if vocab_size is not None and tokenizer is not None:
        raise ConfigError(
            "give either vocab_size (train a tokenizer) or tokenizer (a file), not both."
        )
    if vocab_size is None and tokenizer is None:
        vocab_size = 8192
    fractions = check_fractions(split)
    cum = _cumulative(fractions)
    corpus = Corpus(inputs, text_field=text_field, txt_mode=txt_mode)
    if not corpus.files:
        raise InputDataError(
            f"no .txt or .jsonl files in {', '.join(map(str, corpus.inputs))}.",
            path=corpus.inputs[0],
        )
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    tok_path = outdir / TOKENIZER_NAME
    given: BPETokenizer | None = None
    if tokenizer is not None:
        given = BPETokenizer.load(tokenizer)
    cfg, cfg_hash = _config(
        corpus,
        vocab_size=vocab_size,
        tokenizer_sha256=given.fingerprint if given else None,
        split=list(fractions),
        seed=int(seed),
        shard_bytes=int(shard_bytes),
        min_frequency=int(min_frequency),
        datafuel_version=__version__,
    )
    names = [n for n, f in zip(SPLIT_NAMES, fractions, strict=True) if f > 0]

    only = SPLIT_NAMES.index(names[0]) if len(names) == 1 else None

    def split_of(text: str) -> int:
        if only is not None:  # every document goes to one split: no hash needed
            return only
        return bisect.bisect_right(cum, _hash_unit(text, seed))

    # -- resume: a finished build with the same config is returned as is -------------
    state_path = outdir / _STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("config_sha256") == cfg_hash and state.get("done") and tok_path.exists():
        try:
            for n in names:
                ShardSet(outdir / n)
            summary = dict(state["summary"])
            summary["resumed"] = True
            return summary
        except DatafuelError:  # a split is missing or damaged on disk: build again
            state = {}

    # -- tokenizer: fitted on train-split documents only ------------------------------
    t_train = 0.0
    if given is not None:
        tok = given
        shutil.copyfile(tokenizer, tok_path)  # type: ignore[arg-type]
        trained = False
    elif (
        state.get("config_sha256") == cfg_hash
        and state.get("tokenizer_sha256")
        and tok_path.exists()
    ):
        tok = BPETokenizer.load(tok_path)
        trained = tok.fingerprint != state["tokenizer_sha256"]
        if trained:  # the file changed under us: train again
            tok = _train(corpus, split_of, int(vocab_size), min_frequency)  # type: ignore[arg-type]
    else:
        t1 = time.perf_counter()
        tok = _train(corpus, split_of, int(vocab_size), min_frequency)  # type: ignore[arg-type]
        t_train = time.perf_counter() - t1
        trained = True
    fingerprint = tok.fingerprint
    if given is None:
        fingerprint = tok.save(tok_path)
        atomic_write_json(
            state_path, {"config_sha256": cfg_hash, "tokenizer_sha256": fingerprint, "done": False}
        )

    # -- encode: stream documents, route whole documents to their split ---------------
    t2 = time.perf_counter()
    counts = {n: {"documents": 0, "tokens": 0} for n in names}
    provenance = {
        "source": [str(p) for p in corpus.inputs],
        "stage": "text",
        "tokenizer": TOKENIZER_NAME,
        "tokenizer_sha256": fingerprint,
        "split_method": "hash",
        "seed": int(seed),
        "config_sha256": cfg_hash,
    }
    metadata = {
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "eot_token": tok.eot_token,
        "token_dtype": str(tok.dtype),
    }
    field = {"tokens": ragged(str(tok.dtype))}
    if runner is not None:
        # encoding and shard writing as engine tasks (e.g. Ray): the same bytes as below
        from datafuel.engine._units import write_text_splits

        def routed() -> Iterator[tuple[int, str]]:
            for text in corpus:
                yield split_of(text), text

        def check_nonempty() -> None:
            if corpus.stats.documents == 0:
                raise InputDataError(
                    f"the corpus in {', '.join(map(str, corpus.inputs))} has no non-empty documents "
                    f"({corpus.stats.files} file(s), {corpus.stats.empty} empty document(s)).",
                    path=corpus.inputs[0],
                )

        counts.update(
            write_text_splits(
                runner,
                outdir,
                names,
                routed(),
                tokenizer=tok,
                split_names=SPLIT_NAMES,
                shard_bytes=shard_bytes,
                provenance=provenance,
                metadata=metadata,
                batch_chars=batch_chars,
                before_close=check_nonempty,
            )
        )
    else:
        with ExitStack() as stack:
            writers = {
                n: stack.enter_context(
                    ShardWriter(
                        outdir / n,
                        field,
                        shard_bytes=shard_bytes,
                        provenance={**provenance, "split": n},
                        metadata=metadata,
                    )
                )
                for n in names
            }

            def tagged() -> Iterator[tuple[int, str]]:
                for text in corpus:
                    yield split_of(text), text

            for tags, arrays in encode_documents(tok, tagged(), batch_chars=batch_chars):
                if len(names) == 1:
                    writers[names[0]].write({"tokens": arrays})
                    c = counts[names[0]]
                    c["documents"] += len(arrays)
                    c["tokens"] += sum(len(a) for a in arrays)
                else:
                    tag_arr = np.asarray(tags)
                    for k in np.unique(tag_arr).tolist():
                        sel = np.flatnonzero(tag_arr == k).tolist()
                        rows = [arrays[i] for i in sel]
                        writers[SPLIT_NAMES[k]].write({"tokens": rows})
                        c = counts[SPLIT_NAMES[k]]
                        c["documents"] += len(rows)
                        c["tokens"] += sum(len(a) for a in rows)
                if on_progress is not None:
                    on_progress(len(arrays))
            if corpus.stats.documents == 0:
                raise InputDataError(
                    f"the corpus in {', '.join(map(str, corpus.inputs))} has no non-empty documents "
                    f"({corpus.stats.files} file(s), {corpus.stats.empty} empty document(s)).",
                    path=corpus.inputs[0],
                )
    t_encode = time.perf_counter() - t2

    record = {
        "method": "hash",
        "unit": "document",
        "hash": "blake2b-64 of the document's UTF-8 text keyed by the seed, mapped to [0, 1)",
        "seed": int(seed),
        "fractions": list(fractions),
        "counts": {n: counts[n]["documents"] if n in counts else 0 for n in SPLIT_NAMES},
        "tokens": {n: counts[n]["tokens"] if n in counts else 0 for n in SPLIT_NAMES},
        "total": sum(c["documents"] for c in counts.values()),
    }
    atomic_write_json(outdir / SPLIT_RECORD, record)
    summary = {
        "out": str(outdir),
        "splits": counts,
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "token_dtype": str(tok.dtype),
        "tokenizer_sha256": fingerprint,
        "tokenizer_trained": trained,
        "corpus": corpus.stats.to_json(),
        "seconds": {
            "train_tokenizer": round(t_train, 3),
            "encode": round(t_encode, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
        "resumed": False,
    }
    atomic_write_json(
        state_path,
        {
            "config_sha256": cfg_hash,
            "tokenizer_sha256": fingerprint,
            "done": True,
            "summary": summary,
            "config": cfg,
        },
    )
    return summary


def _train(
    corpus: Corpus, split_of: Callable[[str], int], vocab_size: int, min_frequency: int
) -> BPETokenizer:
    train_docs = (t for t in corpus if split_of(t) == 0)
    try:
        return train_bpe(train_docs, vocab_size, min_frequency=min_frequency)
    except TokenizerError as exc:
        if corpus.stats.documents == 0:
            raise InputDataError(
                f"the corpus in {', '.join(map(str, corpus.inputs))} has no non-empty documents "
                f"({corpus.stats.files} file(s), {corpus.stats.empty} empty document(s)).",
                path=corpus.inputs[0],
            ) from exc
        raise
