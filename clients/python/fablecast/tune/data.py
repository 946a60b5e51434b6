"""Training data for the narrator adapter: beats the best-of-n narrator told that pass the metrics.

``fablecast tune data`` plays story presets on the real engine with the
best-of-n narrator (candidate openings scored for the winning option and the
tone, then the tone pass; docs/stories.md) and keeps every beat that meets
the eval's own bars (``keep``): its own text acts the winning option out
(closer to the winner than to every loser), is in the tone it was asked
for, ends at a sentence end and has no meta-talk (sentences the guard dropped
are not in the told text, so the target never holds them). An
example is that beat's narration prompt (system, user, the prefill) and the
text the narrator told after the prefill: the adapter learns to write in one
stream what best-of-n picks out of many (rejection-sampling distillation).

Pure apart from ``collect``: samples and an embedder in, examples out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fablecast.eval.metrics import BeatRecord, adheres, tone_of
from fablecast.inference.story.embed import Embedder
from fablecast.inference.story.text import ends_sentence, is_meta

#: Presets the shipped adapter was trained on; ``wuxia`` is held out (eval reports it apart).
TRAIN_PRESETS = ("lantern_market", "noir", "space_opera", "fairy_tale")


@dataclass(frozen=True, slots=True)
class Example:
    """One training example: chat messages ending in the prefill, and the continuation."""

    messages: list[dict[str, str]]
    target: str
    preset: str
    tone: str
    choice: str | None

    def to_json(self) -> dict[str, Any]:
        """The JSONL row."""
        return {
            "messages": self.messages,
            "target": self.target,
            "preset": self.preset,
            "tone": self.tone,
            "choice": self.choice,
        }


def continuation(generated: str) -> str:
    """What the model writes after the prefill, from the narrator's told text.

    The narrator joins the first own sentence to a prefill left open with a
    comma (``", she grabs the key."``) or closes it (``". She runs."``); the
    prefill already ends with the comma, so the joint is dropped here.
    """
    text = generated.lstrip()
    if text[:1] in ",.;:":
        text = text[1:]
    return " " + text.strip()


def keep(sample: dict[str, Any], embedder: Embedder) -> str | None:
    """Why ``sample`` is not a good example (None: keep it)."""
    generated = str(sample.get("generated") or "").strip()
    if not generated:
        return "empty"
    if not ends_sentence(str(sample.get("text") or "")):
        return "cut"
    if is_meta(generated):
        return "meta-talk"
    record = BeatRecord(
        beat=int(sample.get("beat") or 0),
        text=str(sample.get("text") or ""),
        generated=generated,
        choice=sample.get("choice"),
        losers=list(sample.get("losers") or []),
        tone=sample.get("tone"),
    )
    if adheres(record, embedder) is False:
        return "does not act the winner out"
    if record.tone and tone_of(generated, embedder) != record.tone:
        return "off tone"
    return None


def select(
    samples: Iterable[dict[str, Any]], embedder: Embedder
) -> tuple[list[Example], dict[str, int]]:
    """The examples among ``samples`` and a count of why the others were left out."""
    out: list[Example] = []
    why: dict[str, int] = {}
    for s in samples:
        reason = keep(s, embedder)
        if reason is not None:
            why[reason] = why.get(reason, 0) + 1
            continue
        out.append(
            Example(
                messages=list(s["messages"]),
                target=continuation(str(s["generated"])),
                preset=str(s.get("preset") or ""),
                tone=str(s.get("tone") or ""),
                choice=s.get("choice"),
            )
        )
    return out, why


def balance(
    rows: Sequence[dict[str, Any]], key: str = "tone", cap: int = 3
) -> list[dict[str, Any]]:
    """``rows`` with the rarer groups (by ``key``) repeated toward the largest group's size.

    A group is repeated at most ``cap`` times in all, so a handful of examples
    is not learnt by heart. Order: every row once, in order, then the repeats.
    """
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get(key), []).append(r)
    if not groups:
        return []
    top = max(len(g) for g in groups.values())
    out = list(rows)
    for g in groups.values():
        want = min(top, cap * len(g)) - len(g)
        out += [g[i % len(g)] for i in range(want)]
    return out


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> str:
    """Write ``rows`` as JSON lines; return the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    path.write_text(data, encoding="utf-8")
    return hashlib.sha256(data.encode()).hexdigest()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file (blank lines skipped)."""
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON: {exc}") from None
    return rows
