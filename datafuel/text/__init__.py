"""Text: byte-level BPE training and encoding (HF ``tokenizers``) into token shard sets.

The pieces ``datafuel.build.text`` (``datafuel build text``) composes:
:class:`Corpus`, :func:`assign_split`, :func:`train_bpe` / :class:`BPETokenizer`,
:func:`encode_documents`, :func:`export_bin`, :func:`export_megatron`.
"""

from __future__ import annotations

from ._assign import assign_split, split_router
from ._corpus import Corpus, CorpusStats, clean_text
from ._encode import encode_documents
from ._export import LLMC_MAGIC, export_bin, read_bin
from ._megatron import MEGATRON_DTYPE_CODES, MEGATRON_INDEX_HEADER, export_megatron
from ._tokenizer import DEFAULT_EOT, BPETokenizer, token_dtype, train_bpe

__all__ = [  # noqa: RUF022 - plain sorted(), as tests/test_public_api.py checks
    "BPETokenizer",
    "Corpus",
    "CorpusStats",
    "DEFAULT_EOT",
    "LLMC_MAGIC",
    "MEGATRON_DTYPE_CODES",
    "MEGATRON_INDEX_HEADER",
    "assign_split",
    "clean_text",
    "encode_documents",
    "export_bin",
    "export_megatron",
    "read_bin",
    "split_router",
    "token_dtype",
    "train_bpe",
]
