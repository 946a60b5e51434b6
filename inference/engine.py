"""The engine seam: what every backend (vLLM, OpenAI-compatible, transformers, scripted) offers.

Contract:
- ``generate`` is an async iterator of deltas; many may run concurrently (the
  backend batches them). Leaving the iteration early (``aclose``/cancel) aborts
  the request in the engine.
- ``abort(request_id)`` aborts from outside (room closed, veto, rewind).
- An engine failure surfaces as ``EngineError`` raised in every open stream.
- ``health()`` is cheap and never blocks; ``start()`` warms the engine up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from fablecast.inference.types import EngineHealth, GenerationDelta, GenerationRequest


@runtime_checkable
class EngineClient(Protocol):
    """An LLM engine that streams continuations of many concurrent requests."""

    @property
    def name(self) -> str:
        """Backend name as in /readyz: ``vllm``, ``openai``, ``transformers``, ``scripted``."""
        ...

    @property
    def model(self) -> str:
        """The model served."""
        ...

    @property
    def max_concurrency(self) -> int:
        """How many requests the engine usefully runs at once (scheduler admission bound)."""
        ...

    async def start(self) -> None:
        """Load and warm up; returns when the engine can serve."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream the continuation of ``request`` as deltas."""
        ...

    async def abort(self, request_id: str) -> None:
        """Abort a running request; its stream ends with ``finish_reason="abort"``."""
        ...

    def health(self) -> EngineHealth:
        """Current readiness."""
        ...

    async def close(self) -> None:
        """Release the engine."""
        ...


async def close_stream(stream: AsyncIterator[GenerationDelta]) -> None:
    """Close a ``generate`` stream early (aborting its request), if it can be closed."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
