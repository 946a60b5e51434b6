"""The pre-broadcast holdback: streamed text is released only once the filter has seen past it.

Pure: ``feed(delta)`` and ``finish()`` return what may be shown now. Contract:

1. The last ``hold_chars`` characters of a streaming beat are never released
   (``hold_chars >= filter.max_match_chars + 1``, raised to it when configured
   smaller). A blocked term is at most ``max_match_chars`` long, so any term
   whose last character has arrived starts inside the checked window, and any
   term not yet complete starts inside the unreleased tail: a term split across
   deltas, however finely, is seen whole before any of it is released.
2. Each ``feed`` checks the unreleased text together with the last
   ``hold_chars`` released characters (the context a whole-word match needs).
3. Once blocked or failed, the holdback releases nothing more for this beat;
   ``verdict`` says why. ``failed`` means the filter could not run: the text
   is held, never sent (fails closed).
4. ``finish()`` checks the tail as final text (the end of a beat is a word
   boundary) and releases it if allowed.
5. Releases end after whitespace where they can, so clients never see half a
   word (and a word is never split across frames by the holdback); a run of
   more than ``2 * hold_chars`` characters without whitespace is cut anyway.

The added latency of the holdback is the time the engine takes to yield
``hold_chars`` more characters (docs/benchmarks.md, "Holdback").
"""

from __future__ import annotations

from dataclasses import dataclass

from fablecast.server.moderation.filter import FilterUnavailable, SafetyFilter, Verdict


@dataclass(frozen=True, slots=True)
class Release:
    """Text that may be shown now (possibly empty), and whether the beat was stopped."""

    text: str
    blocked: Verdict | None = None  # the filter refused text (rule 3)
    failed: str | None = None  # the filter could not run (rule 3: held, fails closed)


class Holdback:
    """One beat's gate between the engine and the room's stream."""

    __slots__ = ("_context", "_pending", "_released", "blocked", "failed", "filter", "hold_chars")

    def __init__(self, safety: SafetyFilter, hold_chars: int = 0) -> None:
        self.filter = safety
        self.hold_chars = max(hold_chars, safety.max_match_chars + 1)
        self._pending = ""
        self._context = ""
        self._released = 0
        self.blocked: Verdict | None = None
        self.failed: str | None = None

    @property
    def stopped(self) -> bool:
        """Blocked or failed: nothing more is released for this beat."""
        return self.blocked is not None or self.failed is not None

    @property
    def released_chars(self) -> int:
        """Characters released so far in this beat."""
        return self._released

    @property
    def pending(self) -> str:
        """Text received and not (yet) released."""
        return self._pending

    def feed(self, delta: str) -> Release:
        """Take an engine delta; return what may be released now (rules 1-3)."""
        if self.stopped:
            return Release("")
        self._pending += delta
        pending = self._pending
        cut = len(pending) - self.hold_chars
        if cut <= 0:
            return Release("")
        space = max(pending.rfind(" ", 0, cut), pending.rfind("\n", 0, cut))
        if space >= 0:
            cut = space + 1
        elif cut < self.hold_chars:
            return Release("")  # rule 5: wait for the end of the word
        return self._check(final=False, cut=cut)

    def finish(self) -> Release:
        """The beat ended: check and release the rest (rule 4)."""
        if self.stopped:
            return Release("")
        return self._check(final=True, cut=len(self._pending))

    def _check(self, *, final: bool, cut: int) -> Release:
        window = self._context + self._pending
        # The context's first character only tells whether a term after it starts a
        # word: a match may not start on it (it may be the tail of a longer word).
        start = 1 if self._released > len(self._context) else 0
        try:
            verdict = self.filter.check(window, final=final, start=start)
        except FilterUnavailable as exc:
            self.failed = str(exc)
            return Release("", failed=self.failed)
        except Exception as exc:  # any failure of the filter holds the text
            self.failed = f"filter failed: {type(exc).__name__}: {exc}"
            return Release("", failed=self.failed)
        if not verdict.allowed:
            self.blocked = verdict
            return Release("", blocked=verdict)
        out, self._pending = self._pending[:cut], self._pending[cut:]
        self._released += len(out)
        self._context = (self._context + out)[-(self.hold_chars + 1) :]
        return Release(out)
