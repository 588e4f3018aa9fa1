"""The resampling report as a few human-readable lines (``resample_report.txt``)."""

from __future__ import annotations

from typing import Any

__all__ = ["REPORT_NAME", "format_report"]

#: The report's file name in a resampled shard set's directory.
REPORT_NAME = "resample_report.json"


def format_report(report: dict[str, Any]) -> str:
    """A few human-readable lines summarising a resampling report."""
    c = report["counts"]
    lines = [
        f"resampled {c['tokens']:,} tokens in {c['documents']:,} documents with the "
        f"{report['prior'].get('kind', 'prior')} (threshold {report['threshold']}, top-k "
        f"{report['top_k']}, temperature {report['temperature']}, seed {report['seed']})",
        f"  above threshold: {100 * c['fraction_above_threshold']:.1f}% of editable tokens; "
        f"changed: {100 * c['fraction_changed']:.1f}%",
        f"  {'':10s} {'distinct-1':>10s} {'distinct-2':>10s} {'distinct-4':>10s} "
        f"{'top50-bigr':>10s} {'tail kept':>10s} {'tail share':>10s}  perplexity min/median/max",
    ]
    for name in ("original", "resampled", "synthetic"):
        s = report["diversity"][name]
        ppl = s.get("perplexity", {})
        lines.append(
            f"  {name:10s} {s['distinct_1']:10.4f} {s['distinct_2']:10.4f} {s['distinct_4']:10.4f} "
            f"{s['top50_bigram_share']:10.4f} {s.get('tail_types_kept', float('nan')):10.3f} "
            f"{s.get('tail_token_share', float('nan')):10.4f}  "
            f"{ppl.get('min', float('nan')):.2f}/{ppl.get('median', float('nan')):.2f}/{ppl.get('max', float('nan')):.2f}"
        )
    return "\n".join(lines)
