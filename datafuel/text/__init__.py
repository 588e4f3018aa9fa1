"""Text: byte-level BPE training and encoding (HF ``tokenizers``) into token shard sets.

``build_text`` is the Python form of ``datafuel build text``; the pieces it composes
(:class:`Corpus`, :func:`train_bpe` / :class:`BPETokenizer`, :func:`encode_documents`,
:func:`export_bin`) are usable on their own.
"""

from __future__ import annotations

from ._build import assign_split, build_text
from ._corpus import Corpus, CorpusStats, clean_text
from ._encode import encode_documents
from ._export import LLMC_MAGIC, export_bin, read_bin
from ._tokenizer import DEFAULT_EOT, BPETokenizer, token_dtype, train_bpe

__all__ = [  # noqa: RUF022 - plain sorted(), as tests/test_public_api.py checks
    "BPETokenizer",
    "Corpus",
    "CorpusStats",
    "DEFAULT_EOT",
    "LLMC_MAGIC",
    "assign_split",
    "build_text",
    "clean_text",
    "encode_documents",
    "export_bin",
    "read_bin",
    "token_dtype",
    "train_bpe",
]
