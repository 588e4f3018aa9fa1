"""A 50 MB line and a 5 MB line without whitespace build in bounded memory and time.

The build runs in a child process under an address-space limit (``RLIMIT_AS``).
Measured on 2 cores (tokenizers 0.23.3): the child's peak address space is 434 MB
with only normal documents and 1.25 GB with the two long lines (RSS 0.94 GB, 10 s).
Before long documents were cut, a 200 MB line needed 11.5 GB. The limit, 2 GiB, is
that baseline plus room for the long lines in pieces, far below what encoding them
whole takes.
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from datafuel.demo import sample_corpus_path
from datafuel.text import Corpus, train_bpe

LIMIT_BYTES = 2 << 30
LONG_MB, NO_WHITESPACE_MB = 50, 5

CHILD = """
import json, sys
from pathlib import Path
from datafuel import build
from datafuel.loaders import ShardSet
from datafuel.text import BPETokenizer
src, out, tok_path = map(Path, sys.argv[1:4])
build.text([src], out, tokenizer=tok_path, fractions=(1.0, 0.0, 0.0))
ts = ShardSet(out / "train").token_stream("tokens")
tok = BPETokenizer.load(tok_path)
checks = []
with src.open(encoding="utf-8") as fh:
    for i, line in enumerate(fh):
        text = json.loads(line)["text"]
        ids = ts.document(i)
        head = tok.decode(ids[: min(len(ids) - 1, 20000)])
        tail = tok.decode(ids[max(0, len(ids) - 20001) : -1]) if len(text) > 10**6 else text
        checks.append(
            bool(ids[-1] == tok.eot_id and int((ids == tok.eot_id).sum()) == 1)
            and text.startswith(head) and text.endswith(tail) and len(head) > 0
        )
print(json.dumps({"documents": ts.num_documents, "checks": checks}))
"""


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


def test_long_lines_build_under_an_address_space_limit(tmp_path: Path) -> None:
    docs = list(Corpus([sample_corpus_path()]))
    train_bpe(docs, vocab_size=2000).save(tmp_path / "tok.json")
    prose = "\n\n".join(docs)
    long = (prose * (LONG_MB * 2**20 // len(prose) + 1))[: LONG_MB * 2**20]
    rnd = random.Random(0)
    word = "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=NO_WHITESPACE_MB << 20))
    texts = [*docs[:5], long, word, *docs[5:10]]
    src = tmp_path / "c.jsonl"
    with src.open("w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(json.dumps({"text": t}) + "\n")
    del long, word, texts
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(tmp_path / "out"), str(tmp_path / "tok.json")],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_address_space,
        check=False,
    )
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["documents"] == 12
    assert result["checks"] == [True] * 12  # one EOT each, decoded head (and tail) match
    assert seconds < 60, f"the build took {seconds:.1f} s (about 10 s measured on 2 cores)"
