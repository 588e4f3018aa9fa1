"""Bytes to ``str`` under the text policy: invalid UTF-8 becomes U+FFFD, counted."""

from __future__ import annotations

__all__ = ["decode_utf8"]


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """``raw`` decoded, each invalid sequence as U+FFFD; and how many were replaced."""
    try:
        return raw.decode("utf-8"), 0  # the common case: valid UTF-8, one pass
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
    # replacements made here = U+FFFD in the text minus those that were real U+FFFD bytes
    return text, text.count("\ufffd") - raw.count(b"\xef\xbf\xbd")
