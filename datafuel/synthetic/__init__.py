"""Semi-synthetic data: priors, ToEdit-style token resampling, diversity statistics.

The pieces ``datafuel.build.resample`` (``datafuel resample``) composes: priors
(:class:`NGramPrior`, :class:`TorchPrior`, :func:`load_hf_prior`),
:func:`resample_documents`, :func:`diversity_stats` and the report.
"""

from __future__ import annotations

from ._diversity import distinct_n, diversity_stats, perplexities, top_bigram_share
from ._hf import load_hf_prior
from ._ngram import NGramPrior
from ._prior import Prior, Scores, apply_decoding
from ._report import REPORT_NAME, format_report
from ._resample import ResampleCounts, doc_rng, resample_document, resample_documents
from ._torch import TorchPrior

__all__ = [  # noqa: RUF022 - plain sorted(), as tests/test_public_api.py checks
    "NGramPrior",
    "Prior",
    "REPORT_NAME",
    "ResampleCounts",
    "Scores",
    "TorchPrior",
    "apply_decoding",
    "distinct_n",
    "diversity_stats",
    "doc_rng",
    "format_report",
    "load_hf_prior",
    "perplexities",
    "resample_document",
    "resample_documents",
    "top_bigram_share",
]
