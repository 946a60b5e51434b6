"""Mood as tone: the room's mood becomes a directive about the prose.

Each reaction of the fixed set (``fablecast.protocol.messages.REACTIONS``) maps
to one tone (``REACTION_TONES``); the room's tone is the tone of its dominant
reaction once the mood is intense enough, else the tone nearest to the mood's
(valence, arousal) point. A directive is an instruction about the prose
("Write it tense and frightening: ..."), never a sentence about the audience.
``ANCHORS`` are reference passages per tone; ``fablecast eval`` scores a beat's
tone by embedding similarity to them (docs/quality.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Tone:
    """One documented tone directive."""

    name: str
    #: Adjectives, as the directive names them.
    words: str
    #: What to do in the prose.
    how: str
    #: (valence, arousal) this tone sits at.
    point: tuple[float, float]
    #: Words the narration's sampling favours a little (a logit bias, where the engine can).
    favour: tuple[str, ...] = ()
    #: Short phrases the server writes into the beat's first sentence, after the
    #: winning action (``"Mira opens the door, heart pounding,"``): the model
    #: continues a sentence already in the tone. Not anchor text (``ANCHORS``).
    leads: tuple[str, ...] = ()
    #: More words that mark this tone (beside ``favour``): other tones' narration
    #: shuns both (``shun``).
    marks: tuple[str, ...] = ()

    @property
    def directive(self) -> str:
        """The instruction given to the narrator."""
        return f"Make this scene {self.words}: {self.how}."

    def lead(self, beat: int) -> str:
        """The lead phrase of beat ``beat`` (they take turns; "" when the tone has none)."""
        return self.leads[beat % len(self.leads)] if self.leads else ""

    @property
    def shun(self) -> tuple[str, ...]:
        """Words the narration's sampling avoids: those marking the opposed tones
        (``OPPOSED``; a negative logit bias, where the engine can)."""
        words = [w for o in OPPOSED.get(self.name, ()) for w in (*TONES[o].favour, *TONES[o].marks)]
        mine = {*self.favour, *self.marks}
        return tuple(dict.fromkeys(w for w in words if w not in mine))


TONES: Final[dict[str, Tone]] = {
    t.name: t
    for t in (
        Tone(
            "tense",
            "tense and frightening",
            "danger is close, use dark details, fear and short sentences",
            (-0.6, 0.8),
            (
                "fear",
                "afraid",
                "dark",
                "danger",
                "scream",
                "shadow",
                "terror",
                "trembling",
                "dread",
            ),
            ("heart pounding", "breath held tight", "every nerve on edge"),
            ("fright", "feared", "scared", "horror", "deadly", "threat", "panic", "shiver"),
        ),
        Tone(
            "funny",
            "funny and absurd",
            "something silly happens, people joke and laugh",
            (0.7, 0.7),
            ("laugh", "laughs", "joke", "silly", "giggle", "funny", "grin", "ridiculous", "absurd"),
            ("trying hard not to laugh", "grinning like a fool", "snorting at the silliness"),
            ("laughed", "laughing", "jokes", "giggled", "grinned", "chuckled", "silliness"),
        ),
        Tone(
            "sad",
            "sad and quiet",
            "something is lost, people grieve and weep",
            (-0.7, -0.4),
            ("tears", "sad", "grief", "lost", "weep", "alone", "sorrow", "mourn", "cry"),
            ("eyes wet with tears", "heart heavy with grief", "quiet and sorrowful"),
            (
                "tear",
                "sadness",
                "sadly",
                "cried",
                "crying",
                "wept",
                "weeping",
                "lonely",
                "grieve",
                "mourning",
                "sorrowful",
                "heartbroken",
                "despair",
                "melancholy",
                "loss",
            ),
        ),
        Tone(
            "calm",
            "calm and warm",
            "a gentle, peaceful moment of rest and kindness",
            (0.8, -0.3),
            ("quiet", "gentle", "warm", "peaceful", "calm", "soft", "rest", "smile", "kind"),
            ("slow and peaceful", "smiling kindly", "warm and unhurried"),
            ("gently", "softly", "peace", "calmly", "quietly", "resting", "kindly", "warmth"),
        ),
        Tone(
            "exciting",
            "exciting and fast",
            "sudden action, a chase or a fight, everything moves quickly",
            (0.2, 0.9),
            ("suddenly", "run", "fast", "chase", "leap", "rush", "fight", "race", "dash"),
            ("in a sudden rush", "faster than ever", "leaping wildly"),
            ("ran", "running", "raced", "rushed", "leapt", "dashed", "charged", "sprinted"),
        ),
    )
}

#: Tones whose words a tone's narration shuns (``Tone.shun``): the misses of
#: docs/quality.md read mostly as ``sad``, so the bright tones shun it.
OPPOSED: Final[dict[str, tuple[str, ...]]] = {
    "tense": ("funny", "calm"),
    "funny": ("sad", "tense"),
    "sad": ("funny", "exciting"),
    "calm": ("sad", "tense"),
    "exciting": ("sad", "calm"),
}

#: The tone each reaction of the fixed set asks for.
REACTION_TONES: Final[dict[str, str]] = {
    "fear": "tense",
    "anger": "tense",
    "laugh": "funny",
    "joy": "funny",
    "sad": "sad",
    "love": "calm",
    "surprise": "exciting",
    "bored": "exciting",
}

#: Reference passages per tone, for scoring a beat's tone by embedding similarity.
ANCHORS: Final[dict[str, tuple[str, ...]]] = {
    "tense": (
        "Fear grips her. Something moves in the dark and her heart pounds with terror.",
        "A scream echoes. The danger is close, the shadows are deadly and he is afraid.",
    ),
    "funny": (
        "Everyone bursts out laughing at the silly joke; it is absurd and ridiculous.",
        "He slips on a banana and falls into the cake, and the whole room giggles.",
    ),
    "sad": (
        "She weeps quietly over what was lost. Grief and sorrow fill the empty room.",
        "Tears run down his face; he mourns his friend and feels lonely and sad.",
    ),
    "calm": (
        "A peaceful, quiet moment. Warm light, soft breeze, and gentle kindness between friends.",
        "They rest by the fire, calm and content, sharing tea in the gentle evening.",
    ),
    "exciting": (
        "Suddenly they run, leaping and racing through the chase as the fight explodes.",
        "Action! She dashes, dodges the attack and charges forward at breakneck speed.",
    ),
}

#: Below this decayed reaction count the room has no tone (no directive).
MIN_INTENSITY: Final = 0.5


def tone_for_mood(
    valence: float, arousal: float, intensity: float, reactions: Mapping[str, float]
) -> Tone | None:
    """The tone the mood asks for (None when the room is quiet)."""
    if intensity < MIN_INTENSITY:
        return None
    known = {k: v for k, v in reactions.items() if k in REACTION_TONES and v > 0}
    if known:
        top = max(sorted(known), key=lambda k: known[k])
        return TONES[REACTION_TONES[top]]
    return min(
        TONES.values(),
        key=lambda t: (t.point[0] - valence) ** 2 + (t.point[1] - arousal) ** 2,
    )
