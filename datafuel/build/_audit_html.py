"""``audit(..., html=...)``: the worst pairs as one self-contained HTML page.

No network: the CSS is inline and every picture is a base64 ``data:`` PNG thumbnail.
Image pairs are shown side by side; text pairs with the longest run of words they
share marked (``<mark>``); table pairs as their feature values. Every string from the
data (text, paths) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from collections.abc import Callable, Sequence
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import numpy as np

from datafuel._fs import atomic_write_bytes
from datafuel.errors import OutputError

__all__ = ["longest_shared_run", "write_audit_html"]

THUMB = 192  # the longest side of a thumbnail, in pixels
CONTEXT_WORDS = 40  # words shown either side of the shared run
MAX_RUN_WORDS = 300  # a longer shared run is shown as its start and end
MAX_WORDS = 20_000  # words of each document searched for the shared run

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;background:#fafafa}
h1{font-size:1.4em}table.sets{border-collapse:collapse;margin-bottom:1em}
table.sets td{padding:2px 10px;border-bottom:1px solid #ddd}
.pair{background:#fff;border:1px solid #ccc;border-radius:6px;margin:1em 0;padding:.8em}
.pair h2{font-size:1em;margin:0 0 .5em 0}.sides{display:flex;gap:1em}
.side{flex:1;min-width:0}.where{font-size:.85em;color:#555;word-break:break-all}
.text{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.85em}
mark{background:#ffe066}img{max-width:100%;border:1px solid #999}
.none{color:#080}.leak{color:#b00}
"""


def _words(text: str) -> list[re.Match[str]]:
    return list(re.finditer(r"\S+", text))[:MAX_WORDS]


def longest_shared_run(a: str, b: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The character spans in ``a`` and ``b`` of the longest run of words both contain.

    Words are runs of non-space characters, compared exactly; ``((0, 0), (0, 0))``
    when no word is shared.
    """
    wa, wb = _words(a), _words(b)
    m = SequenceMatcher(
        None, [w.group() for w in wa], [w.group() for w in wb], autojunk=False
    ).find_longest_match(0, len(wa), 0, len(wb))
    if m.size == 0:
        return (0, 0), (0, 0)
    return (
        (wa[m.a].start(), wa[m.a + m.size - 1].end()),
        (wb[m.b].start(), wb[m.b + m.size - 1].end()),
    )


def _marked(text: str, span: tuple[int, int]) -> str:
    """``text`` escaped, the span in ``<mark>``, trimmed to some context around it."""
    lo, hi = span
    e = html.escape
    if lo == hi:
        words = _words(text)
        cut = words[2 * CONTEXT_WORDS].start() if len(words) > 2 * CONTEXT_WORDS else len(text)
        return e(text[:cut]) + (" …" if cut < len(text) else "")
    before = _words(text[:lo])
    start = before[-CONTEXT_WORDS].start() if len(before) > CONTEXT_WORDS else 0
    after = _words(text[hi:])
    end = hi + after[CONTEXT_WORDS - 1].end() if len(after) > CONTEXT_WORDS else len(text)
    run = _words(text[lo:hi])
    if len(run) > MAX_RUN_WORDS:
        half = MAX_RUN_WORDS // 2
        inner = (
            e(text[lo : lo + run[half - 1].end()])
            + " <em>[…]</em> "
            + e(text[lo + run[-half].start() : hi])
        )
    else:
        inner = e(text[lo:hi])
    return (
        ("… " if start > 0 else "")
        + e(text[start:lo])
        + f"<mark>{inner}</mark>"
        + e(text[hi:end])
        + (" …" if end < len(text) else "")
    )


def _thumbnail(data: bytes) -> str:
    """An ``<img>`` of a base64 PNG thumbnail, or a note when the bytes do not decode."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as src:
            im = ImageOps.exif_transpose(src)
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            im.thumbnail((THUMB, THUMB))
            w, h = im.size
            buf = io.BytesIO()
            im.save(buf, "PNG")
    except Exception as exc:  # a picture that does not decode is shown as a note
        return f'<p class="where">(cannot decode: {html.escape(type(exc).__name__)})</p>'
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="thumbnail" width="{w}" height="{h}" src="data:image/png;base64,{b64}">'


def _values(x: Any) -> str:
    v = np.asarray(x).ravel()
    shown = ", ".join(f"{float(t):.6g}" for t in v[:32])
    return html.escape("[" + shown + (", …" if v.size > 32 else "") + "]")


def _where(side: dict[str, Any]) -> str:
    return f'<div class="where">{html.escape(side["set"])} [{int(side["index"])}]</div>'


def write_audit_html(
    path: str | os.PathLike[str],
    result: dict[str, Any],
    globals_: Sequence[tuple[int, int]],
    payload: Callable[[int], Any],
) -> None:
    """Write ``result``'s pairs to ``path``; ``globals_[k]`` are pair ``k``'s record ids.

    ``payload(i)`` is record ``i``: its text, its image bytes, or its feature values.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(
            f"HTML report {path}: the folder {path.parent} does not exist.", path=path.parent
        )
    if path.is_dir():
        raise OutputError(f"HTML report {path}: is a folder, not a file name.", path=path)
    kind, e = result["kind"], html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>datafuel audit: {e(kind)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>datafuel audit: {e(kind)} ({e(result['method'])})</h1>",
        '<table class="sets">',
        *(
            f"<tr><td>{e(p)}</td><td>{int(n):,} records</td></tr>"
            for p, n in result["sets"].items()
        ),
        "</table>",
        f'<p class="{"leak" if result["leaked"] else "none"}">'
        f"{int(result['cross_clusters'])} cluster(s) across sets, "
        f"{int(result['cross_pairs'])} pair(s); the worst {len(result['pairs'])} below.</p>",
    ]
    for k, (p, (ga, gb)) in enumerate(zip(result["pairs"], globals_, strict=True)):
        a, b = payload(ga), payload(gb)
        if kind == "text":
            sa, sb = longest_shared_run(a, b)
            bodies = [f'<div class="text">{_marked(a, sa)}</div>']
            bodies.append(f'<div class="text">{_marked(b, sb)}</div>')
        elif kind == "images":
            bodies = [_thumbnail(a), _thumbnail(b)]
        else:
            bodies = [
                f'<div class="text">{_values(a)}</div>',
                f'<div class="text">{_values(b)}</div>',
            ]
        parts += [
            f'<section class="pair" id="pair-{k}">',
            f"<h2>pair {k + 1}: similarity {float(p['similarity']):.3f}</h2>",
            '<div class="sides">',
            f'<div class="side">{_where(p["a"])}{bodies[0]}</div>',
            f'<div class="side">{_where(p["b"])}{bodies[1]}</div>',
            "</div></section>",
        ]
    parts.append("</body></html>\n")
    try:
        atomic_write_bytes(path, "\n".join(parts).encode("utf-8"), fsync=False)
    except OSError as exc:
        raise OutputError(
            f"HTML report {path}: cannot be written ({exc.strerror}).", path=path
        ) from exc
