"""Text and resampling throughput: datafuel vs raw HF ``tokenizers``.

1. Encode: ``datafuel build text --tokenizer FILE`` (read .jsonl, hash-split, encode,
   write verified token shards) vs raw ``tokenizers`` on the same texts already in
   memory: ``encode_batch`` (the usual call) and ``encode_batch_fast`` (the same call
   datafuel makes, without offsets). Same tokenizer, same corpus. Target: datafuel
   within 10% of raw ``encode_batch``.
   Also a hand-written peer (read the .jsonl, ``encode_batch`` per chunk, append to a
   flat ``.bin``), the script a user would otherwise write.
2. Resample: ``datafuel.build.resample`` with the n-gram prior (tokens/s of the teacher-forced
   pass + redraws, prior fit and report excluded), plus the prior's scoring alone.

The corpus is generated deterministically (``datafuel.demo.write_corpus``) and cached
under the system temp directory. Medians of several runs after a warm-up.

    python3 benchmarks/bench_text.py            # ~16 MB corpus
    python3 benchmarks/bench_text.py --quick    # ~3 MB corpus, one run each
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _timing import median_time

from datafuel import build
from datafuel.demo import write_corpus
from datafuel.loaders import ShardSet
from datafuel.synthetic import NGramPrior
from datafuel.text import BPETokenizer, encode_documents, train_bpe


def corpus(num_docs: int, cache: Path) -> Path:
    path = cache / f"corpus-{num_docs}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write_corpus(tmp, num_docs, seed=1234)
        os.replace(tmp, path)
    return path


def interleaved(fns: dict[str, object], runs: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median wall time of each function, runs interleaved (a, b, c, b, c, a, ...) after a warm-up.

    Interleaving spreads a busy neighbour's noise over every contender instead of one.
    """
    names = list(fns)
    out: dict[str, object] = {n: fns[n]() for n in names}  # type: ignore[operator]
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            t, c = time.perf_counter(), time.process_time()
            out[n] = fns[n]()  # type: ignore[operator]
            times[n].append(time.perf_counter() - t)
            cpu[n].append(time.process_time() - c)
    med = {n: statistics.median(v) for n, v in times.items()}
    med.update({f"{n}:cpu": statistics.median(v) for n, v in cpu.items()})
    return med, out


def bench_encode(src: Path, texts: list[str], tok_path: Path, work: Path, runs: int) -> Any:
    """Encode: tokenizers' encode_batch vs datafuel's encode path and build, vs hand-written."""
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    tok = BPETokenizer.load(tok_path)
    raw = tok.tokenizer

    def raw_encode_batch() -> int:
        encs = raw.encode_batch(texts, add_special_tokens=False)
        return sum(len(e.ids) + 1 for e in encs)  # + EOT, to count the same tokens

    def raw_encode_batch_fast() -> int:
        encs = raw.encode_batch_fast(texts, add_special_tokens=False)
        return sum(len(e.ids) + 1 for e in encs)

    def datafuel_encode_in_memory() -> int:
        # datafuel's encode path alone (batching, worker threads, arrays + EOT) on the same texts
        return sum(len(a) for _, arrays in encode_documents(tok, enumerate(texts)) for a in arrays)

    def handwritten() -> int:
        # what a user writes without datafuel (nanoGPT prepare.py style): read the jsonl,
        # encode_batch per chunk of lines, append uint16 tokens + EOT to one flat .bin
        n, eot = 0, tok.eot_id
        with src.open(encoding="utf-8") as fh, open(work / "hand.bin", "wb") as out:
            while True:
                lines = [line for _, line in zip(range(2000), fh, strict=False)]
                if not lines:
                    break
                encs = raw.encode_batch(
                    [json.loads(x)["text"] for x in lines], add_special_tokens=False
                )
                arr = np.concatenate([np.array([*e.ids, eot], dtype=tok.dtype) for e in encs])
                arr.tofile(out)
                n += len(arr)
        return n

    def datafuel_build() -> int:
        out = work / "build"
        shutil.rmtree(out, ignore_errors=True)
        s = build.text([src], out, tokenizer=tok_path, fractions=(1.0, 0.0, 0.0))
        return int(s["tokens"]["train"])

    med, res = interleaved(
        {
            "raw": raw_encode_batch,
            "fast": raw_encode_batch_fast,
            "df_mem": datafuel_encode_in_memory,
            "hand": handwritten,
            "datafuel": datafuel_build,
        },
        runs,
    )
    t_raw, t_fast, t_df = med["raw"], med["fast"], med["datafuel"]
    n_raw, n_fast, n_df = res["raw"], res["fast"], int(res["datafuel"])  # type: ignore[call-overload]
    assert n_raw == n_fast == n_df == res["hand"] == res["df_mem"], res
    ts = ShardSet(work / "build" / "train").token_stream("tokens")
    assert ts.num_tokens == n_df
    print(f"\nencode (median of {runs}, text bytes / wall time):")
    for name, key in (
        ("tokenizers encode_batch (texts in memory)", "raw"),
        ("tokenizers encode_batch_fast (texts in memory)", "fast"),
        ("datafuel encode_documents (texts in memory)", "df_mem"),
        ("hand-written: read jsonl, encode_batch, .bin", "hand"),
        ("datafuel build text (jsonl -> verified shards)", "datafuel"),
    ):
        t = med[key]
        print(
            f"  {name:48s} {t:7.2f} s  {text_bytes / t / 1e6:7.2f} MB/s  {n_df / t / 1e6:6.2f} M tokens/s"
            f"  (CPU {med[key + ':cpu']:.2f} s)"
        )
    t_mem = med["df_mem"]
    print(
        f"  datafuel encode path / encode_batch:    {t_mem / t_raw:.3f}  (overhead {100 * (t_mem / t_raw - 1):+.1f}%, target <= +10%; same texts in memory)"
    )
    print(
        f"  datafuel build / encode_batch time:     {t_df / t_raw:.3f}  (overhead {100 * (t_df / t_raw - 1):+.1f}%; adds reading the jsonl and writing shards)"
    )
    print(
        f"  datafuel time / encode_batch_fast time: {t_df / t_fast:.3f}  (overhead {100 * (t_df / t_fast - 1):+.1f}%)"
    )
    hand = med["hand"]
    print(
        f"  datafuel time / hand-written time:      {t_df / hand:.3f}  (overhead {100 * (t_df / hand - 1):+.1f}%)"
    )
    print(f"  datafuel CPU / encode_batch CPU:        {med['datafuel:cpu'] / med['raw:cpu']:.3f}")
    return ts


def bench_resample(work: Path, ts: Any, quick: bool, runs: int) -> None:
    """The n-gram prior's fit and scoring, and ``build.resample`` on the built tokens."""
    # -- resampling with the n-gram prior ----------------------------------------------
    train = work / "build" / "train"
    meta = ShardSet(train).metadata
    limit = 2_000_000 if not quick else 400_000
    docs, total = [], 0
    for i in range(ts.num_documents):
        d = ts.document(i)
        docs.append(d)
        total += len(d)
        if total >= limit:
            break
    t0 = time.perf_counter()
    prior = NGramPrior.fit(docs, vocab_size=meta["vocab_size"], eot_id=meta["eot_id"], order=3)
    t_fit = time.perf_counter() - t0
    t_score, sc = median_time(lambda: prior.score(docs, threshold=0.99, top_k=8), runs, warmup=1)
    t_p, _ = median_time(lambda: prior.score(docs, threshold=2.0, top_k=8), runs, warmup=1)
    above = sum(len(s.positions) for s in sc)  # type: ignore[union-attr]
    print(f"\nn-gram prior (order 3, vocab {meta['vocab_size']}) on {total:,} tokens:")
    print(f"  fit                                   {total / t_fit / 1e6:6.2f} M tokens/s")
    print(f"  P(actual token) for every token       {total / t_p / 1e6:6.2f} M tokens/s")
    print(
        f"  + top-8 where P >= 0.99 ({100 * above / total:.1f}% of tokens) {total / t_score / 1e6:6.2f} M tokens/s"
    )

    times, rates = [], []
    for _ in range(runs):
        shutil.rmtree(work / "rs", ignore_errors=True)
        r = build.resample(train, work / "rs", seed=0, report_tokens=2000)["report"]
        times.append(r["seconds"]["resample"])
        rates.append(r["counts"]["tokens"] / r["seconds"]["resample"])
    c = r["counts"]
    print(
        f"\nbuild.resample (n-gram prior, threshold 0.99, top-k 8, T 1.5) on {c['tokens']:,} tokens, median of {runs}:"
    )
    print(
        f"  {statistics.median(rates) / 1e6:.2f} M tokens/s  (resample pass {statistics.median(times):.2f} s; prior fit {r['seconds']['fit_prior']:.2f} s; "
        f"{100 * c['fraction_above_threshold']:.1f}% above threshold, {100 * c['fraction_changed']:.2f}% changed)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small corpus, one timed run each")
    ap.add_argument("--docs", type=int, default=None, help="documents in the corpus")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--runs", type=int, default=None)
    args = ap.parse_args()
    num_docs = args.docs or (5_000 if args.quick else 25_000)
    runs = args.runs or (3 if args.quick else 5)
    cache = Path(tempfile.gettempdir()) / "datafuel-bench-text"
    cache.mkdir(exist_ok=True)
    src = corpus(num_docs, cache)
    nbytes = src.stat().st_size
    texts = [json.loads(line)["text"] for line in src.open(encoding="utf-8")]
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    print(
        f"corpus: {len(texts):,} documents, {nbytes / 1e6:.1f} MB jsonl ({text_bytes / 1e6:.1f} MB of text), {os.cpu_count()} CPUs"
    )

    tok_path = cache / f"tokenizer-{args.vocab_size}-{num_docs}.json"
    if not tok_path.exists():
        train_bpe(texts[: max(1000, len(texts) // 4)], vocab_size=args.vocab_size).save(tok_path)
    work = Path(tempfile.mkdtemp(prefix="bench-text-"))
    try:
        ts = bench_encode(src, texts, tok_path, work, runs)
        bench_resample(work, ts, args.quick, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
