"""Document-aware token windows: ``Loader(seq_len=T, documents=True | "pack")``.

Every expected value is recomputed here from the raw documents: a token is written
as ``1 + its position in the stream`` (uint32), so a window's tokens say where it
starts and padding (token 0) is never a document token.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from loader_helpers import check_resume, take

import datafuel.loaders._windows as windows_mod
from datafuel.errors import ConfigError, DatafuelError, SchemaError
from datafuel.loaders import Loader, PackedWindows, ShardSet, ShardWriter, fixed, ragged
from datafuel.loaders._windows import TokenWindows

FIELDS = ("position_ids", "cu_seqlens", "max_seqlen", "loss_mask")


def passes(loader: Any, n: int) -> Iterator[Any]:
    """``n`` batches over as many passes as it takes (a pass restored at the very end of
    its epoch is empty, once, as in StatefulDataLoader)."""
    got = empty = 0
    while got < n:
        progressed = False
        for batch in loader:
            progressed = True
            yield batch
            got += 1
            if got == n:
                return
        empty = 0 if progressed else empty + 1
        if empty > 1:
            raise AssertionError("the loader produced two empty passes in a row")


def zipf_lengths(rng: np.random.Generator, n: int, cap: int) -> np.ndarray:
    """Zipf-distributed document lengths (many short, a few longer than a window), some 0."""
    lens = np.minimum(rng.zipf(1.4, size=n), cap).astype(np.int64)
    lens[rng.random(n) < 0.02] = 0  # empty documents add no boundary
    return lens


def write_corpus(d: Path, lens: np.ndarray, shard_bytes: int = 1 << 16) -> Path:
    """Documents of ``lens`` tokens whose tokens are ``1 + stream position`` (uint32)."""
    cuts = np.concatenate([[0], np.cumsum(lens)])
    docs = [np.arange(cuts[i], cuts[i + 1], dtype=np.uint32) + 1 for i in range(len(lens))]
    with ShardWriter(d, {"tokens": ragged("uint32")}, shard_bytes=shard_bytes) as w:
        for s in range(0, len(docs), 97):
            w.write({"tokens": docs[s : s + 97]})
    return d


def doc_ids(lens: np.ndarray) -> np.ndarray:
    """The document of every stream position."""
    return np.repeat(np.arange(len(lens)), lens)


def reference_fields(
    tokens: np.ndarray, did: np.ndarray, seq_len: int, max_segments: int
) -> dict[str, np.ndarray]:
    """The document fields of a batch, from the raw documents, one window at a time."""
    b = len(tokens)
    pos = np.zeros((b, seq_len), np.int64)
    mask = np.zeros((b, seq_len), bool)
    cu: list[int] = []
    for j in range(b):
        s = int(tokens[j, 0]) - 1
        np.testing.assert_array_equal(tokens[j], np.arange(s, s + seq_len + 1) + 1)
        inputs, targets = did[s : s + seq_len], did[s + 1 : s + seq_len + 1]
        starts = [0] + [i for i in range(1, seq_len) if inputs[i] != inputs[i - 1]]
        for a, c in zip(starts, [*starts[1:], seq_len], strict=True):
            pos[j, a:c] = np.arange(c - a)
        cu += [j * seq_len + a for a in starts]
        mask[j] = inputs == targets
    lens = np.diff([*cu, b * seq_len])
    cu_arr = np.full(b * max_segments + 1, b * seq_len, np.int32)
    cu_arr[: len(cu)] = cu
    return {
        "position_ids": pos,
        "cu_seqlens": cu_arr,
        "max_seqlen": np.array(lens.max(), np.int32),
        "loss_mask": mask,
    }


@pytest.fixture(scope="module")
def zipf_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(7)
    lens = zipf_lengths(rng, 6000, cap=300)
    return write_corpus(tmp_path_factory.mktemp("zipf"), lens), lens


@pytest.fixture(params=["native", "numpy"])
def fields_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the C kernel (``_gather.document_fields``) and on the numpy path."""
    if request.param == "native":
        if windows_mod._gather is None:
            pytest.skip("the C extension did not build")
    else:
        monkeypatch.setattr(windows_mod, "_gather", None)
    return str(request.param)


@pytest.mark.parametrize("seed", [0, 1])
def test_fields_equal_the_boundaries_of_the_raw_documents(
    zipf_corpus: tuple[Path, np.ndarray], seed: int, fields_path: str
) -> None:
    d, lens = zipf_corpus
    did = doc_ids(lens)
    T = 48
    loader = Loader(d, batch_size=16, seq_len=T, documents=True, seed=seed, num_workers=2)
    plain = Loader(d, batch_size=16, seq_len=T, seed=seed, num_workers=2)
    S = loader.windows.max_segments
    windows = 0
    for batch, ref in zip(take(loader, 2 * len(loader)), take(plain, 2 * len(plain)), strict=True):
        assert list(batch.keys()) == ["tokens", *FIELDS]
        torch.testing.assert_close(batch["tokens"], ref["tokens"], rtol=0, atol=0)
        tok = batch["tokens"].numpy()
        want = reference_fields(tok, did, T, S)
        for k in FIELDS:
            got = batch[k].numpy()
            assert got.dtype == want[k].dtype, k
            np.testing.assert_array_equal(got, want[k], err_msg=k)
        windows += len(tok)
    assert windows >= 2000
    assert loader.state_dict() == plain.state_dict()


# -- the C kernel against the numpy path ------------------------------------------------
def both_paths(
    w: TokenWindows, starts: np.ndarray, out: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """The fields of ``starts`` from the C kernel, checked equal (dtypes, shapes, values)
    to the numpy path's."""
    s = np.asarray(starts, np.int64)
    got = w._native_fields(s, out)
    want = w._numpy_fields(s, None)
    assert list(got) == list(want) == list(FIELDS)
    for k in FIELDS:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    return got


def special_starts(w: TokenWindows) -> tuple[np.ndarray, np.ndarray]:
    """Starts with a boundary exactly at ``s``, ``s + 1``, ``s + T - 1``, ``s + T`` and
    ``s + T + 1``; and the starts of the windows that hold ``max_segments`` segments."""
    u, t, n = w.boundaries, w.seq_len, w.stream.num_tokens
    edge = np.concatenate([u, u - 1, u - t + 1, u - t, u - t - 1, [0, n - t - 1]])
    dense = np.zeros(0, np.int64)
    if u.size and t > 1:
        reach = np.searchsorted(u, u + (t - 1), side="left") - np.arange(u.size)
        dense = u[reach == reach.max()] - 1
    return np.unique(edge[(edge >= 0) & (edge <= n - t - 1)]), dense[dense <= n - t - 1]


@pytest.mark.skipif(windows_mod._gather is None, reason="the C extension did not build")
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("T", [1, 2, 7, 48, 300])
def test_native_fields_equal_the_numpy_path(tmp_path: Path, seed: int, T: int) -> None:
    rng = np.random.default_rng(seed)
    lens = zipf_lengths(rng, 3000, cap=400)  # many documents of one token, some empty
    lens[rng.random(lens.size) < 0.05] = 1
    d = write_corpus(tmp_path / "z", lens, shard_bytes=1 << 13)  # windows across shards
    stream = ShardSet(d).token_stream("tokens")
    assert len(stream.shard_starts) > 10
    w = TokenWindows(stream, T)
    n = stream.num_tokens
    edge, dense = special_starts(w)
    for s in np.array_split(edge, max(1, edge.size // 64)):
        both_paths(w, s)
    # windows of max_segments segments each: cu_seqlens full but for its last entry
    dense = np.resize(dense, 64) if dense.size else np.zeros(64, np.int64)
    got = both_paths(w, dense)
    cu = got["cu_seqlens"]
    if T > 1 and w.boundaries.size:
        assert w.max_segments > 1 and cu.size == 64 * w.max_segments + 1
        assert (cu[:-1] < 64 * T).all() and cu[-1] == 64 * T
    for k in range(20):  # random starts off the epoch grid, and batches of the grid
        both_paths(w, rng.integers(0, n - T, int(rng.integers(1, 70))))
        grid = w.starts(seed, k, shuffle=True)
        both_paths(w, grid[rng.permutation(grid.size)[:64]])
    empty = both_paths(w, np.zeros(0, np.int64))
    assert empty["position_ids"].shape == (0, T) and empty["cu_seqlens"].tolist() == [0]
    # into the loader's reused slots, which come back filled
    s = rng.integers(0, n - T, 16)
    slot = {"position_ids": np.full((16, T), -1), "loss_mask": np.zeros((16, T), bool)}
    got = both_paths(w, s, out=slot)
    assert got["position_ids"] is slot["position_ids"] and got["loss_mask"] is slot["loss_mask"]
    # a strided slot takes the numpy path, with the same values
    wide = np.zeros((16, 2 * T), np.int64)
    strided = {"position_ids": wide[:, ::2], "loss_mask": np.zeros((16, T), bool)}
    got = both_paths(w, s, out=strided)
    np.testing.assert_array_equal(wide[:, ::2], got["position_ids"])


@pytest.mark.skipif(windows_mod._gather is None, reason="the C extension did not build")
def test_native_fields_of_a_stream_without_boundaries(tmp_path: Path) -> None:
    w = TokenWindows(
        ShardSet(write_corpus(tmp_path / "one", np.array([500]))).token_stream("tokens"), 16
    )
    assert w.boundaries.size == 0 and w.max_segments == 1
    got = both_paths(w, np.array([0, 3, 483]))
    assert got["cu_seqlens"].tolist() == [0, 16, 32, 48] and int(got["max_seqlen"]) == 16
    assert got["loss_mask"].all()


@pytest.mark.skipif(windows_mod._gather is None, reason="the C extension did not build")
@pytest.mark.parametrize("T", [1, 2, 7, 48])
def test_packed_fast_paths_equal_the_numpy_path(tmp_path: Path, T: int) -> None:
    rng = np.random.default_rng(T)
    lens = zipf_lengths(rng, 2000, cap=200)
    d = write_corpus(tmp_path / "p", lens, shard_bytes=1 << 12)  # pieces across shards
    p = PackedWindows(ShardSet(d).token_stream("tokens"), T)
    if T > 2:  # batches of whole windows, and of pieces (T = 1: every piece is whole)
        assert 0 < int(p.full.sum()) < len(p)
    cases = [
        np.flatnonzero(p.full)[:40],  # only whole windows: one native copy
        np.flatnonzero(~p.full)[:40],
        np.flatnonzero(p.used == T)[:8],  # padding only in slot T
        *(rng.integers(0, len(p), int(rng.integers(1, 70))) for _ in range(20)),
    ]
    for ids in cases:
        if not ids.size:
            continue
        got, want = p._native_fields(ids, None), p._numpy_fields(ids, None)
        for k in FIELDS:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        for dtype in (np.uint32, np.int64):
            ref = p._read_pieces(ids, np.zeros((ids.size, T + 1), dtype))
            np.testing.assert_array_equal(p.read(ids, out=np.zeros_like(ref)), ref)
    with pytest.raises(IndexError, match="packed window id out of range"):
        p.read(np.array([0, len(p)]))


def test_max_segments_is_the_most_any_window_can_hold(
    zipf_corpus: tuple[Path, np.ndarray],
) -> None:
    d, lens = zipf_corpus
    did = doc_ids(lens)
    for T in (1, 2, 5, 48):
        w = Loader(d, batch_size=4, seq_len=T, documents=True).windows
        # segments of the window at s: 1 + document changes between inputs s .. s + T - 1
        change = np.concatenate([[0], np.cumsum(did[1:] != did[:-1])])
        s = np.arange(len(did) - T)
        assert w.max_segments == int((1 + change[s + T - 1] - change[s]).max())


def test_loss_mask_is_zero_exactly_where_the_input_is_end_of_text(tmp_path: Path) -> None:
    eot = 1
    rng = np.random.default_rng(3)
    docs = [
        np.append(rng.integers(2, 50000, size=int(n)), eot).astype(np.uint16)
        for n in rng.integers(0, 40, size=400)
    ]
    with ShardWriter(tmp_path, {"tokens": ragged("uint16")}, shard_bytes=2000) as w:
        w.write({"tokens": docs})
    loader = Loader(tmp_path, batch_size=8, seq_len=32, documents=True, seed=5)
    n_masked = 0
    for batch in loader:
        inputs = batch["tokens"][:, :-1]
        np.testing.assert_array_equal(batch["loss_mask"].numpy(), (inputs != eot).numpy())
        n_masked += int((~batch["loss_mask"]).sum())
    assert n_masked > 100


# -- a tiny transformer with a block-diagonal mask -----------------------------------
class TinyLM(torch.nn.Module):
    """Two pre-norm attention blocks over SDPA with an explicit boolean mask."""

    def __init__(self, vocab: int, dim: int = 32, heads: int = 4, max_pos: int = 64) -> None:
        super().__init__()
        self.heads = heads
        self.tok = torch.nn.Embedding(vocab, dim)
        self.pos = torch.nn.Embedding(max_pos, dim)
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict(
                {
                    "norm": torch.nn.LayerNorm(dim),
                    "qkv": torch.nn.Linear(dim, 3 * dim),
                    "proj": torch.nn.Linear(dim, dim),
                    "mlp": torch.nn.Sequential(
                        torch.nn.LayerNorm(dim),
                        torch.nn.Linear(dim, 2 * dim),
                        torch.nn.GELU(),
                        torch.nn.Linear(2 * dim, dim),
                    ),
                }
            )
            for _ in range(2)
        )
        self.head = torch.nn.Linear(dim, vocab)

    def forward(
        self, tokens: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        x = self.tok(tokens) + self.pos(position_ids)
        b, t, dim = x.shape
        for blk in self.blocks:
            q, k, v = (
                blk["qkv"](blk["norm"](x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            )
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
            x = x + blk["proj"](a.transpose(1, 2).reshape(b, t, dim))
            x = x + blk["mlp"](x)
        return self.head(x)  # type: ignore[no-any-return]


def mask_from_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """Causal and block-diagonal: input i sees input j <= i of its own segment."""
    seg = torch.cumsum(position_ids == 0, dim=1)
    t = position_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    return (seg[:, :, None] == seg[:, None, :]) & causal


def mask_from_cu_seqlens(cu_seqlens: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """The same mask from ``cu_seqlens`` (segment of each flattened input)."""
    flat = torch.arange(b * t, dtype=torch.int32)
    seg = torch.searchsorted(cu_seqlens, flat, right=True).view(b, t)
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    return (seg[:, :, None] == seg[:, None, :]) & causal


def test_block_diagonal_mask_keeps_documents_apart(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(11)
    lens = rng.integers(3, 20, size=300)
    d = write_corpus(tmp_path, lens)
    T = 40
    loader = Loader(d, batch_size=8, seq_len=T, documents=True, seed=2)
    model = TinyLM(vocab=int(lens.sum()) + 2, max_pos=T).eval()
    checked = 0
    for batch in loader:
        tokens, pos = batch["tokens"][:, :-1], batch["position_ids"]
        b = len(tokens)
        mask = mask_from_positions(pos)
        assert torch.equal(mask, mask_from_cu_seqlens(batch["cu_seqlens"], b, T))
        with torch.no_grad():
            base = model(tokens, pos, mask)
            causal_only = model(
                tokens, pos, torch.ones(T, T, dtype=torch.bool).tril().expand(b, T, T)
            )
        for j in range(b):
            starts = [*torch.nonzero(pos[j] == 0).flatten().tolist(), T]
            for k in range(len(starts) - 2):  # document k and the next one, k + 1
                a, c, e = starts[k], starts[k + 1], starts[k + 2]
                bad = tokens.clone()
                bad[j, a:c] = torch.randint(0, model.tok.num_embeddings, (c - a,))
                with torch.no_grad():
                    out = model(bad, pos, mask)
                    leaky = model(
                        bad, pos, torch.ones(T, T, dtype=torch.bool).tril().expand(b, T, T)
                    )
                torch.testing.assert_close(out[j, c:e], base[j, c:e], rtol=0, atol=1e-6)
                assert not torch.allclose(out[j, a:c], base[j, a:c], atol=1e-4)  # k did change
                # without the document mask the perturbation leaks into document k + 1
                assert not torch.allclose(leaky[j, c:e], causal_only[j, c:e], atol=1e-4)
                checked += 1
        if checked >= 60:
            break
    assert checked >= 60


@pytest.mark.parametrize("documents", [True, "pack"])
def test_no_recompiles_under_torch_compile(tmp_path: Path, documents: bool | str) -> None:
    rng = np.random.default_rng(4)
    lens = zipf_lengths(rng, 200, cap=100)
    d = write_corpus(tmp_path, lens)
    T = 16
    loader = Loader(d, batch_size=4, seq_len=T, documents=documents, drop_last=True, seed=0)
    model = TinyLM(vocab=int(lens.sum()) + 2, dim=16, heads=2, max_pos=T)

    def step(
        tokens: torch.Tensor,
        position_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        max_seqlen: torch.Tensor,
        loss_mask: torch.Tensor,
    ) -> torch.Tensor:
        b, t = position_ids.shape
        mask = mask_from_cu_seqlens(cu_seqlens, b, t)
        logits = model(tokens[:, :-1], position_ids, mask)
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none"
        )
        return (loss * loss_mask.flatten()).sum() / loss_mask.sum() + 0 * max_seqlen

    try:
        import torch._dynamo as dynamo
    except ImportError:  # pragma: no cover - torch without dynamo
        pytest.skip("torch._dynamo is not available in this torch build")
    dynamo.reset()
    # dynamo decides recompiles (its guards) whatever the backend; aot_eager traces
    # forward and backward without needing a C++ toolchain for inductor's kernels
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    seen = set()
    with dynamo.config.patch(error_on_recompile=True):
        for batch in take(loader, 200):
            seen.add((int(batch["max_seqlen"]), int((batch["cu_seqlens"].diff() > 0).sum())))
            loss = compiled(*(batch[k] for k in ("tokens", *FIELDS)))
            loss.backward()
    assert len(seen) > 10  # the values changed, the shapes did not
    assert len(loader) * 2 < 200  # across epochs too


# -- packing ---------------------------------------------------------------------------
def packed_pieces(batch: dict[str, torch.Tensor], seq_len: int) -> list[tuple[int, int]]:
    """(first stream position, length) of every document piece of a packed batch, checked."""
    tokens, pos = batch["tokens"].numpy(), batch["position_ids"].numpy()
    mask = batch["loss_mask"].numpy()
    out = []
    for j in range(len(tokens)):
        row = tokens[j]
        starts = [*np.flatnonzero(pos[j] == 0).tolist(), seq_len]
        for a, c in itertools.pairwise(starts):
            np.testing.assert_array_equal(pos[j, a:c], np.arange(c - a))
            if row[a] == 0:  # padding: to the window's end, every target masked
                assert c == seq_len and not row[a:].any() and not mask[j, a:].any()
                continue
            end = c + 1 if c == seq_len and row[seq_len] != 0 else c
            piece = row[a:end].astype(np.int64) - 1
            np.testing.assert_array_equal(piece, piece[0] + np.arange(end - a))
            # every target inside the piece counts; the one after it does not
            np.testing.assert_array_equal(mask[j, a : end - 1], True)
            if end - 1 < seq_len:
                assert not mask[j, end - 1]
            out.append((int(piece[0]), end - a))
    return out


def expected_pieces(lens: np.ndarray, seq_len: int) -> Counter[tuple[int, int]]:
    """Each document cut only at multiples of T into pieces of at most T + 1 tokens."""
    out: Counter[tuple[int, int]] = Counter()
    start = 0
    for n in lens.tolist():
        m = 0
        while seq_len * m + 1 < n:  # a piece needs a target
            out[(start + seq_len * m, min(seq_len + 1, n - seq_len * m))] += 1
            m += 1
        start += n
    return out


@pytest.mark.parametrize("T", [8, 33])
def test_packing_splits_documents_only_at_T(zipf_corpus: tuple[Path, np.ndarray], T: int) -> None:
    d, lens = zipf_corpus
    loader = Loader(d, batch_size=32, seq_len=T, documents="pack", seed=1)
    got: Counter[tuple[int, int]] = Counter()
    pad = slots = 0
    for batch in loader:
        got.update(packed_pieces(batch, T))
        assert batch["cu_seqlens"].shape == (
            len(batch["tokens"]) * loader.windows.max_segments + 1,
        )
        cu = batch["cu_seqlens"].numpy()
        flat = batch["position_ids"].numel()
        starts = np.flatnonzero(batch["position_ids"].numpy().reshape(-1) == 0)
        np.testing.assert_array_equal(cu[: len(starts)], starts)  # the segments, in order
        np.testing.assert_array_equal(cu[len(starts) :], flat)  # then zero-length padding
        assert int(batch["max_seqlen"]) == np.diff(cu).max()
        pad += int((batch["tokens"] == 0).sum())
        slots += batch["tokens"].numel()
    assert got == expected_pieces(lens, T)  # every piece once, whole, cut only at T
    assert slots == len(loader.windows) * (T + 1)
    assert loader.windows.padding_fraction == pytest.approx(pad / slots, abs=1e-12)
    assert 0 < loader.windows.padding_fraction < 0.5


def test_packing_is_best_fit_and_deterministic(zipf_corpus: tuple[Path, np.ndarray]) -> None:
    d, _ = zipf_corpus
    T = 20
    a = PackedWindows(ShardSet(d).token_stream(), T)
    b = PackedWindows(ShardSet(d).token_stream(), T)
    ids = np.arange(len(a))
    np.testing.assert_array_equal(a.read(ids), b.read(ids))
    # replay the placements, longest piece first (ties in stream order): a piece opens a
    # window only when no open window has room for it, else it goes to one with the
    # least room that fits
    window = np.searchsorted(a.ptr, np.arange(a.ptr[-1]), side="right") - 1
    order = np.lexsort((a.piece_start, -a.piece_len))
    room: dict[int, int] = {}
    for q in order.tolist():
        n, w = int(a.piece_len[q]), int(window[q])
        fits = [r for r in room.values() if r >= n]
        if w not in room:
            assert not fits, f"piece of {n} opened window {w} though one had room"
            assert w == len(room)  # windows are numbered as they open
            room[w] = T + 1 - n
        else:
            assert room[w] == min(fits), f"piece of {n} not placed best-fit"
            room[w] -= n
    np.testing.assert_array_equal([room[w] for w in range(len(a))], T + 1 - a.used)


def test_packing_resumes_exactly(zipf_corpus: tuple[Path, np.ndarray]) -> None:
    d, _ = zipf_corpus

    def make() -> Loader:
        return Loader(d, batch_size=24, seq_len=16, documents="pack", seed=3, num_workers=2)

    n = len(make())

    def batches(loader: Any, k: int) -> list[Any]:
        return [{key: v.clone() for key, v in b.items()} for b in passes(loader, k)]

    def same(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> bool:
        return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)

    check_resume(make, batches, [0, 1, n // 2, n - 1, n, n + 3], 2 * n + 2, same)
    state = make().state_dict()
    assert state["kind"] == "packed:tokens:16"
    json.dumps(state)


def test_document_windows_resume_exactly(zipf_corpus: tuple[Path, np.ndarray]) -> None:
    d, _ = zipf_corpus

    def make() -> Loader:
        return Loader(d, batch_size=32, seq_len=24, documents=True, seed=9)

    n = len(make())

    def batches(loader: Any, k: int) -> list[Any]:
        return [dict(b) for b in passes(loader, k)]

    def same(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> bool:
        return all(torch.equal(x[k], y[k]) for k in x)

    check_resume(make, batches, [0, n // 2, n], n + 5, same)
    # a state of plain windows restores into document windows: the same samples
    plain = Loader(d, batch_size=32, seq_len=24, seed=9)
    list(take(plain, 3))
    docs = make()
    docs.load_state_dict(plain.state_dict())
    nxt = next(iter(docs))
    ref = list(take(Loader(d, batch_size=32, seq_len=24, seed=9), 4))[3]
    assert torch.equal(nxt["tokens"], ref["tokens"])


def test_packed_with_no_packable_document(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, {"tokens": ragged("uint16")}) as w:
        w.write({"tokens": [np.array([5], np.uint16), np.zeros(0, np.uint16)]})
    loader = Loader(tmp_path, batch_size=2, seq_len=4, documents="pack")
    assert len(loader) == 0 and list(loader) == []
    assert loader.windows.padding_fraction == 0.0


# -- bad input -------------------------------------------------------------------------
def test_bad_document_arguments_are_refused(tmp_path: Path) -> None:
    tok = write_corpus(tmp_path / "tok", np.array([3, 4, 5]))
    with pytest.raises(ConfigError, match="documents=True .* needs seq_len") as e:
        Loader(tok, batch_size=2, documents=True)
    assert e.value.field == "documents"
    for bad in ("packed", 1, "yes", None):
        with pytest.raises(ConfigError, match="documents must be False, True or 'pack'") as e:
            Loader(tok, batch_size=2, seq_len=4, documents=bad)  # type: ignore[arg-type]
        assert e.value.field == "documents"

    class Ident:
        def __init__(self) -> None:
            self.output_spec = {"tokens": ("int64", (5,))}

        def __call__(self, raw: Any, info: Any) -> Any:
            return raw

    with pytest.raises(ConfigError, match="transform") as e:
        Loader(tok, batch_size=2, seq_len=4, documents=True, transform=Ident())  # type: ignore[arg-type]
    assert e.value.field == "documents"
    with pytest.raises(ConfigError, match="fields="):
        Loader(tok, batch_size=2, seq_len=4, documents="pack", fields=["tokens"])
    rows = tmp_path / "rows"
    with ShardWriter(rows, {"x": fixed("float32")}) as w:
        w.write({"x": np.zeros(4, np.float32)})
    with pytest.raises(SchemaError, match="'x'") as s:
        Loader(rows, batch_size=2, seq_len=4, documents=True, token_field="x")
    assert s.value.field == "x"
    with pytest.raises(SchemaError, match="no field 'tokens'") as s:
        Loader(rows, batch_size=2, seq_len=4, documents="pack")
    assert s.value.field == "tokens"
    with pytest.raises(DatafuelError, match="seq_len"):
        Loader(tok, batch_size=2, seq_len=0, documents=True)
