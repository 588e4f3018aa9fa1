"""A deterministic English-like corpus: the demo's shipped sample, test and benchmark corpora.

Documents are short chronicles built from sentence templates over a Zipf-distributed
vocabulary (a few hundred common English words plus a few thousand invented
place and creature names), so the text has what a tokenizer and a resampler need
to show: frequent, predictable phrases and a long tail of rare words. A small share
of documents carry accents, CJK and emoji. Nothing is downloaded; the same seed
always gives the same text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["generate_documents", "sample_corpus_path", "write_corpus"]

_NOUNS = [
    "river",
    "town",
    "keeper",
    "miller",
    "road",
    "bridge",
    "lantern",
    "harbor",
    "market",
    "winter",
    "orchard",
    "sailor",
    "garden",
    "tower",
    "forest",
    "letter",
    "village",
    "mountain",
    "window",
    "kitchen",
    "weaver",
    "baker",
    "stone",
    "field",
    "shepherd",
    "council",
    "storm",
    "ship",
    "meadow",
    "lighthouse",
    "carpenter",
    "clock",
    "song",
    "journey",
    "harvest",
    "valley",
    "well",
    "gate",
    "bell",
    "festival",
    "traveler",
    "map",
    "path",
    "rain",
    "mill",
    "wheel",
    "boat",
    "cart",
    "horse",
    "candle",
    "book",
    "teacher",
    "child",
    "elder",
    "fisherman",
    "net",
    "island",
    "shore",
    "cliff",
    "cave",
    "fire",
    "hearth",
    "blacksmith",
    "anvil",
    "wagon",
    "inn",
    "guest",
    "stranger",
    "tale",
    "story",
    "king",
    "queen",
    "soldier",
    "scribe",
]
_VERBS = [
    "found",
    "carried",
    "built",
    "crossed",
    "opened",
    "watched",
    "followed",
    "repaired",
    "painted",
    "remembered",
    "answered",
    "visited",
    "guarded",
    "counted",
    "gathered",
    "lifted",
    "mended",
    "traded",
    "promised",
    "shared",
    "planted",
    "baked",
    "wrote",
    "sang",
    "heard",
    "saw",
    "left",
    "reached",
    "climbed",
    "sold",
    "bought",
    "kept",
    "lost",
]
_ADJS = [
    "old",
    "quiet",
    "bright",
    "small",
    "long",
    "narrow",
    "green",
    "cold",
    "warm",
    "heavy",
    "gentle",
    "distant",
    "hidden",
    "broken",
    "golden",
    "patient",
    "careful",
    "silent",
    "early",
    "late",
    "wide",
    "tall",
    "ancient",
    "young",
    "steady",
]
_PREPS = [
    "near",
    "behind",
    "beside",
    "across",
    "under",
    "over",
    "past",
    "toward",
    "through",
    "along",
]
_TIMES = [
    "In the morning,",
    "At dusk,",
    "Before the harvest,",
    "After the storm,",
    "During the festival,",
    "Every winter,",
    "On the third day,",
    "Long ago,",
    "Later that year,",
    "At first light,",
]
_EXTRAS = [
    "café",
    "naïve",
    "façade",
    "Zürich",
    "São",
    "Paulo",
    "東京",
    "北京",
    "서울",
    "Привет",
    "мир",
    "😀",
    "🌍",
    "✨",
    "—",
    "“quoted”",
    "½",
    "±3°C",
]

_ONSETS = [
    "b",
    "br",
    "c",
    "ch",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "j",
    "k",
    "kl",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "qu",
    "r",
    "s",
    "sh",
    "st",
    "t",
    "th",
    "tr",
    "v",
    "w",
    "z",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "ie", "oa"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "nd", "rk", "st", "m", "x"]


def _invented_words(rng: np.random.Generator, n: int) -> list[str]:
    words: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        syl = int(rng.integers(2, 4))
        w = "".join(
            str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) + str(rng.choice(_CODAS))
            for _ in range(syl)
        )
        if w not in words:
            words.add(w)
            out.append(w)
    return out


class _Vocab:
    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(10_000 + seed)
        names = _invented_words(rng, 4000)
        self.names = [w.capitalize() for w in names[:2500]]
        self.nouns = _NOUNS + names[2500:3400]
        self.adjs = _ADJS + names[3400:3700]
        self.verbs = _VERBS + [w + "ed" for w in names[3700:4000]]

    @staticmethod
    def zipf(rng: np.random.Generator, words: list[str], a: float = 1.1) -> str:
        # rank r drawn with weight r^-a: a few words are common, most are rare
        n = len(words)
        u = rng.random()
        r = int((1 + u * ((n + 1) ** (1 - a) - 1)) ** (1 / (1 - a)))
        return words[min(max(r, 1), n) - 1]


def _sentence(rng: np.random.Generator, v: _Vocab) -> str:
    z = v.zipf
    kind = int(rng.integers(0, 6))
    n1, n2, n3 = z(rng, v.nouns), z(rng, v.nouns), z(rng, v.nouns)
    name, adj, verb, prep = z(rng, v.names, 1.05), z(rng, v.adjs), z(rng, v.verbs), z(rng, _PREPS)
    if kind == 0:
        s = f"The {adj} {n1} {verb} the {n2} {prep} the {n3}."
    elif kind == 1:
        s = f"{_TIMES[int(rng.integers(len(_TIMES)))]} {name} {verb} a {adj} {n1} {prep} {z(rng, v.names, 1.05)}."
    elif kind == 2:
        s = f"{name} said that the {n1} of {z(rng, v.names, 1.05)} was {adj} and {z(rng, v.adjs)}."
    elif kind == 3:
        s = f"There were {int(rng.integers(2, 400))} {n1}s in the {n2}, and each one {verb} the {n3}."
    elif kind == 4:
        s = f"Nobody {verb} the {adj} {n1} again, not even {name}."
    else:
        s = f'"We {verb} the {n1} together," said {name}.'
    if rng.random() < 0.02:
        s = s[:-1] + " " + str(rng.choice(_EXTRAS)) + s[-1]
    return s


def generate_documents(num_documents: int, *, seed: int = 0) -> Iterator[str]:
    """Yield ``num_documents`` deterministic English-like documents (a few hundred bytes to a few KB).

    >>> docs = list(generate_documents(3, seed=1))
    >>> len(docs), docs == list(generate_documents(3, seed=1))
    (3, True)
    """
    vocab = _Vocab(seed)
    rng = np.random.default_rng(seed)
    for _ in range(num_documents):
        paras = []
        for _p in range(int(rng.integers(1, 4))):
            paras.append(" ".join(_sentence(rng, vocab) for _ in range(int(rng.integers(2, 8)))))
        title = f"The {vocab.zipf(rng, vocab.adjs).capitalize()} {vocab.zipf(rng, vocab.nouns).capitalize()} of {vocab.zipf(rng, vocab.names, 1.05)}"
        yield title + "\n\n" + "\n\n".join(paras)


def write_corpus(path: str | os.PathLike[str], num_documents: int, *, seed: int = 0) -> int:
    """Write :func:`generate_documents` as ``.jsonl`` (``{"text": ...}`` per line); returns bytes written."""
    p = Path(path)
    n = 0
    with open(p, "w", encoding="utf-8") as fh:
        for doc in generate_documents(num_documents, seed=seed):
            line = json.dumps({"text": doc}, ensure_ascii=False) + "\n"
            fh.write(line)
            n += len(line.encode("utf-8"))
    return n


def sample_corpus_path() -> Path:
    """The small corpus shipped with datafuel (``datafuel/data/text/chronicles.jsonl``)."""
    return Path(str(resources.files("datafuel") / "data" / "text" / "chronicles.jsonl"))
