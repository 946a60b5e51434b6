"""The room's mood: reactions and continuous samples, aggregated with exponential time decay.

Each sample is a point in (valence, arousal) space, both in [-1, 1]: a reaction
from the fixed set maps to a point (``REACTION_POINTS``), a continuous sample
(e.g. from a wearable) gives its own. The mood is the decay-weighted mean of
the points; ``intensity`` is the decayed number of samples (how much the room
is reacting). A sample's weight halves every ``half_life_s``. Only aggregates
are kept, never who reacted how (privacy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

REACTION_POINTS: Final[dict[str, tuple[float, float]]] = {
    "joy": (0.8, 0.5),
    "laugh": (0.7, 0.7),
    "love": (0.9, 0.3),
    "surprise": (0.1, 0.8),
    "fear": (-0.6, 0.8),
    "anger": (-0.7, 0.7),
    "sad": (-0.7, -0.4),
    "bored": (-0.3, -0.8),
}


@dataclass(frozen=True, slots=True)
class MoodSnapshot:
    """The mood at one instant (rounded for the wire)."""

    valence: float
    arousal: float
    intensity: float
    reactions: dict[str, float]


@dataclass(slots=True)
class MoodAggregator:
    """Decayed sums; ``read``/``add`` decay lazily to ``now``."""

    half_life_s: float = 20.0
    _t: float = 0.0
    _w: float = 0.0
    _v: float = 0.0
    _a: float = 0.0
    _reactions: dict[str, float] = field(default_factory=dict)

    def _decay_to(self, now: float) -> None:
        dt = now - self._t
        if dt <= 0:
            return
        f = math.exp(-math.log(2) * dt / self.half_life_s)
        self._w *= f
        self._v *= f
        self._a *= f
        for k in list(self._reactions):
            self._reactions[k] *= f
            if self._reactions[k] < 1e-3:
                del self._reactions[k]
        self._t = now

    def add(
        self,
        now: float,
        *,
        reaction: str | None = None,
        valence: float | None = None,
        arousal: float | None = None,
    ) -> None:
        """One sample. Explicit valence/arousal win over the reaction's point."""
        self._decay_to(now)
        point = REACTION_POINTS.get(reaction, (0.0, 0.0)) if reaction else (0.0, 0.0)
        v = valence if valence is not None else point[0]
        a = arousal if arousal is not None else point[1]
        self._w += 1.0
        self._v += max(-1.0, min(1.0, v))
        self._a += max(-1.0, min(1.0, a))
        if reaction:
            self._reactions[reaction] = self._reactions.get(reaction, 0.0) + 1.0

    def read(self, now: float) -> MoodSnapshot:
        """The mood at ``now``."""
        self._decay_to(now)
        if self._w < 1e-6:
            return MoodSnapshot(0.0, 0.0, 0.0, {})
        return MoodSnapshot(
            valence=round(self._v / self._w, 3),
            arousal=round(self._a / self._w, 3),
            intensity=round(self._w, 3),
            reactions={k: round(v, 2) for k, v in sorted(self._reactions.items())},
        )
