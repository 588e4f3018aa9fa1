"""A Hugging Face causal LM from a local directory as a prior (optional ``transformers`` extra)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from datafuel.errors import ConfigError

from ._torch import TorchPrior

__all__ = ["load_hf_prior"]


def load_hf_prior(
    model_dir: str | os.PathLike[str],
    *,
    vocab_size: int,
    eot_id: int,
    tokenizer_sha256: str | None = None,
    device: str | None = None,
    max_context: int | None = None,
    batch_tokens: int = 1 << 14,
) -> TorchPrior:
    """Load ``AutoModelForCausalLM`` from ``model_dir`` (local files only, never downloaded).

    The token ids in the shards must mean what the model thinks they mean: when
    ``tokenizer_sha256`` (the shard set's tokenizer fingerprint) is given, the model
    directory's ``tokenizer.json`` must have exactly that sha256 — build the shards
    with ``datafuel build text --tokenizer MODEL_DIR/tokenizer.json``.

    Needs the optional extra: ``pip install 'datafuel[transformers]'``; ``transformers``
    is imported only when this is called.
    """
    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise ConfigError(
            f"{d}: not a Hugging Face model directory (no config.json); "
            "--prior takes 'ngram' or a local model directory.",
            path=d,
        )
    if tokenizer_sha256 is not None:
        _check_tokenizer(d, tokenizer_sha256)
    model = _load_model(d)
    if max_context is None:
        max_context = getattr(model.config, "max_position_embeddings", None) or getattr(
            model.config, "n_positions", None
        )
    return TorchPrior(
        model,
        vocab_size=vocab_size,
        eot_id=eot_id,
        device=device,
        max_context=max_context,
        batch_tokens=batch_tokens,
    )


def _check_tokenizer(d: Path, tokenizer_sha256: str) -> None:
    """The model directory's ``tokenizer.json`` must be the shards' tokenizer, byte for byte."""
    tj = d / "tokenizer.json"
    if not tj.is_file():
        raise ConfigError(
            f"{d}: no tokenizer.json, so datafuel cannot check that the model reads the "
            "same token ids as the shards.",
            path=d,
        )
    got = hashlib.sha256(tj.read_bytes()).hexdigest()
    if got != tokenizer_sha256:
        raise ConfigError(
            f"{tj}: sha256 {got[:12]}... differs from the shards' tokenizer "
            f"{tokenizer_sha256[:12]}...; the model would misread every token id. Build the "
            f"shards with --tokenizer {tj}.",
            path=tj,
        )


def _load_model(d: Path) -> Any:
    """``AutoModelForCausalLM`` from local files; a missing extra or a bad directory is a ConfigError."""
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(
            "a model-directory prior needs the optional 'transformers' package: "
            "pip install 'datafuel[transformers]' (or use --prior ngram)."
        ) from exc
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(str(d), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{d}: cannot load the model ({exc}).", path=d) from exc
