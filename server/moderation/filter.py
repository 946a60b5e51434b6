"""The safety filter: word lists per room and rating, and an optional classifier.

Pure: no I/O, no clock. ``SafetyFilter.check(text, final=...)`` says whether
``text`` may be shown. Rules:

1. A blocked term matches case-insensitively, as whole words (``hell`` does not
   match ``hello``; ``ass`` does not match ``class``). A multi-word term matches
   across up to 3 non-word characters between its words (spaces, punctuation,
   a line break), never across more.
2. While a beat streams (``final=False``) a term that ends exactly at the end of
   the text so far is undecided, not a match: the next character decides
   (``hell`` may become ``hello``). The holdback keeps such a term unreleased
   (it lies within the last ``max_match_chars + 1`` characters). At the end of
   the beat (``final=True``) the end of the text is a word boundary.
3. The terms are the rating's built-in list plus the room's own terms, less
   the room's allowed terms. ``mature`` has no built-in terms.
4. The classifier, when configured, sees the same text; it returns True for
   text that must not be shown. If it raises, ``check`` raises
   ``FilterUnavailable``: the caller fails closed (holds the text).

``max_match_chars`` bounds the length of any match; the holdback keeps at least
that many characters (plus one, for rule 2) unreleased, which is what makes a
term split across engine deltas impossible to leak.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

Rating = Literal["family", "teen", "mature"]
RATINGS: Final[tuple[Rating, ...]] = ("family", "teen", "mature")

#: A classifier: True when the text must not be shown. May raise (fails closed).
Classifier = Callable[[str], bool]

#: Built-in terms per rating: a small, conservative floor. Rooms add their own
#: (``blocked_terms``) and can lift one (``allowed_terms``).
_TEEN: Final[tuple[str, ...]] = (
    "fuck",
    "fucking",
    "motherfucker",
    "cunt",
    "shit",
    "bullshit",
    "nigger",
    "faggot",
    "retard",
)
BUILTIN_TERMS: Final[dict[Rating, tuple[str, ...]]] = {
    "mature": (),
    "teen": _TEEN,
    "family": (
        *_TEEN,
        "damn",
        "goddamn",
        "bastard",
        "bitch",
        "asshole",
        "ass",
        "piss",
        "crap",
        "dick",
        "slut",
        "whore",
        "porn",
        "sex",
        "sexy",
        "nude",
        "naked",
        # Seen from the default model in a family room ("I'll make love with ...").
        "make love",
        "making love",
    ),
}

#: Non-word characters allowed between the words of a multi-word term.
_GAP: Final = 3
#: Longest term a room may configure (characters).
MAX_TERM_CHARS: Final = 64


class FilterUnavailable(RuntimeError):
    """The filter could not decide (the classifier failed): the text must be held."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """``allowed`` or not; ``term`` is the matched term, ``reason`` a short explanation."""

    allowed: bool
    term: str | None = None
    reason: str = ""


ALLOWED: Final = Verdict(True)


def _words(term: str) -> list[str]:
    words = re.findall(r"\w+", term.casefold())
    if not words:
        raise ValueError(f"blocked term {term!r} has no word characters")
    if len(term) > MAX_TERM_CHARS:
        raise ValueError(f"blocked term {term[:20]!r}... is longer than {MAX_TERM_CHARS}")
    return words


class SafetyFilter:
    """Checks text against a term list and an optional classifier (see module rules)."""

    __slots__ = ("_classifier", "_pattern", "_terms", "max_match_chars")

    def __init__(self, terms: Iterable[str], classifier: Classifier | None = None) -> None:
        split = {" ".join(_words(t)): _words(t) for t in terms}
        self._terms: tuple[str, ...] = tuple(sorted(split))
        self._classifier = classifier
        if split:
            # Longest first so "motherfucker" is reported rather than a shorter overlap.
            alts = [
                rf"\W{{1,{_GAP}}}".join(map(re.escape, words))
                for _, words in sorted(split.items(), key=lambda kv: -len(kv[0]))
            ]
            self._pattern: re.Pattern[str] | None = re.compile(
                r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", re.IGNORECASE
            )
            self.max_match_chars = max(
                sum(map(len, w)) + _GAP * (len(w) - 1) for w in split.values()
            )
        else:
            self._pattern = None
            self.max_match_chars = 0

    @classmethod
    def for_room(
        cls,
        rating: Rating = "family",
        blocked: Iterable[str] = (),
        allowed: Iterable[str] = (),
        classifier: Classifier | None = None,
    ) -> SafetyFilter:
        """The rating's built-in terms plus ``blocked``, less ``allowed`` (rule 3)."""
        lifted = {" ".join(_words(t)) for t in allowed}
        terms = [t for t in (*BUILTIN_TERMS[rating], *blocked) if " ".join(_words(t)) not in lifted]
        return cls(terms, classifier)

    @property
    def terms(self) -> tuple[str, ...]:
        """The blocked terms, normalised (lower case, single spaces)."""
        return self._terms

    def check(self, text: str, *, final: bool = True, start: int = 0) -> Verdict:
        """Whether ``text`` may be shown (rules 1, 2, 4). Raises ``FilterUnavailable``.

        Terms are looked for from index ``start`` on; the characters before it
        are context only (a whole-word match needs to see the character before).
        """
        pattern = self._pattern
        if pattern is not None:
            # Rule 2: a sentinel word character after a streaming text makes a term
            # that ends at its very end undecided (``(?!\w)`` fails on the sentinel).
            probe = text if final else text + "x"
            hit = pattern.search(probe, start)
            if hit is not None:
                term = " ".join(re.findall(r"\w+", hit.group(0).casefold()))
                return Verdict(False, term, f"blocked term {term!r}")
        if self._classifier is not None:
            try:
                unsafe = self._classifier(text)
            except Exception as exc:
                raise FilterUnavailable(f"classifier failed: {type(exc).__name__}: {exc}") from exc
            if unsafe:
                return Verdict(False, None, "classifier")
        return ALLOWED
