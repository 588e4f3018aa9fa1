"""Text to a language model: BPE on train only, token shards, windows through the loader.

python3 examples/tiny_lm.py
"""

import tempfile
from pathlib import Path

import torch

from datafuel import build
from datafuel.demo import TinyLM, sample_corpus_path  # embedding -> GRU -> logits
from datafuel.loaders import Loader

out = Path(tempfile.mkdtemp(prefix="datafuel-example-"))
# a byte-level BPE is trained on the train split only; 1024 ids fit uint16 shards
summary = build.text([sample_corpus_path()], out, vocab_size=1024, seed=0)
print(summary["counts"], summary["tokens"])  # documents and tokens per split (never mid-document)

seq_len = 64  # each sample is seq_len + 1 tokens: inputs w[:-1], targets w[1:]
loader = Loader(out / "train", batch_size=32, seq_len=seq_len, seed=0)  # uint16 on disk, int64 here
model = TinyLM(1024, dim=64)  # a 64-wide GRU: small enough to train in seconds on a CPU
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
for step, batch in enumerate(loader):  # one epoch; loader.set_epoch(e) for the next
    w = batch["tokens"]
    logits = model(w[:, :-1])
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1)
    )
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 10 == 0:
        print(f"step {step}: loss {loss.item():.3f}")
state = loader.state_dict()  # JSON: load_state_dict resumes exactly here, mid-epoch too
print(state, loader.stats(), sep="\n")
