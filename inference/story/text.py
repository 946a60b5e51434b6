"""Deterministic text checks a story needs: sentences, trimming, loops, meta-talk.

Pure functions, no model. They are the server's guard rails around a small
model (docs/quality.md): a beat is released to clients a whole sentence at a
time, so it can always end at a sentence end; a sentence that repeats an
8-word run of an earlier beat, or that talks about the audience or voting, is
dropped before anyone sees it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

#: Words that make a sentence meta-talk (about the show, not the story).
META_WORDS = re.compile(
    r"\b(audiences?|viewers?|voters?|voting|votes?|voted|ballots?|the reader|readers|"
    r"(?:the )?story continues|chat ?gpt|as an ai|language model)\b",
    re.IGNORECASE,
)
#: Length of the word runs that count as a loop (the issue's "8-word run").
LOOP_N = 8

# A sentence ends at . ! ? (or their CJK forms), optionally followed by closing quotes,
# then the end of the text or whitespace and something that is not a lower-case
# letter ('"Stop!" he cries.' is one sentence).
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*(?=\s+[^\sa-z]|\s*$)")
_SENTENCE_END_OPEN = re.compile(r"[.!?\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*(?=\s+[^\sa-z])")
_WORD = re.compile(r"[\w']+", re.UNICODE)


def split_complete(text: str, *, final: bool = True) -> tuple[list[str], str]:
    """Split ``text`` into complete sentences (with their trailing space) and the rest.

    With ``final=False`` (text still streaming in) a sentence end counts only
    once what follows it is known, so '"Stop!"' is not cut before ' he cries.'.
    """
    out: list[str] = []
    pos = 0
    pattern = _SENTENCE_END if final else _SENTENCE_END_OPEN
    for m in pattern.finditer(text):
        end = m.end()
        # Keep the whitespace that follows with the sentence it ends.
        while end < len(text) and text[end].isspace():
            end += 1
        out.append(text[pos:end])
        pos = end
    return out, text[pos:]


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (an unfinished tail counts as one), stripped."""
    done, rest = split_complete(text)
    out = [s.strip() for s in done if s.strip()]
    if rest.strip():
        out.append(rest.strip())
    return out


def trim_to_sentence(text: str) -> str:
    """``text`` up to its last sentence end (unchanged if it has none)."""
    done, _rest = split_complete(text)
    return "".join(done).rstrip() if done else text.rstrip()


def ends_sentence(text: str) -> bool:
    """Whether ``text`` ends at a sentence end."""
    t = text.rstrip()
    return bool(t) and not split_complete(t)[1]


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``."""
    return [w.lower() for w in _WORD.findall(text)]


def runs(text: str, n: int = LOOP_N) -> list[tuple[str, ...]]:
    """The ``n``-word runs of ``text``, in order (repeats kept)."""
    w = words(text)
    return [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]


def ngrams(text: str, n: int = LOOP_N) -> set[tuple[str, ...]]:
    """The distinct ``n``-word runs of ``text``."""
    return set(runs(text, n))


def without(text: str, phrases: Iterable[str]) -> str:
    """``text`` with every one of ``phrases`` blanked out (longest first, any case)."""
    for phrase in sorted(phrases, key=len, reverse=True):
        if phrase:
            text = re.sub(re.escape(phrase), " ", text, flags=re.IGNORECASE)
    return text


def shares_run(text: str, earlier: Iterable[str], n: int = LOOP_N) -> bool:
    """Whether ``text`` shares any ``n``-word run with one of the ``earlier`` texts."""
    mine = ngrams(text, n)
    if not mine:
        return False
    return any(mine & ngrams(e, n) for e in earlier)


def is_meta(text: str) -> bool:
    """Whether ``text`` talks about the audience, viewers or voting."""
    return META_WORDS.search(text) is not None


def one_line(text: str, limit: int) -> str:
    """``text`` on one line, control characters removed, at most ``limit`` characters."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat[:limit].rstrip()


def json_object(text: str) -> dict[str, Any]:
    """The engine's JSON answer as an object; ``ValueError`` says why it is not one."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not an object")
    return data
