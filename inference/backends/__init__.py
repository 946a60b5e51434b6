"""Engine backends behind the ``EngineClient`` seam, and the factory the server uses.

``create_engine(kind, model, options)`` builds one backend from the server's
``[engine]`` config table. Backends that need heavy packages (vLLM, torch,
transformers, httpx) are imported only when asked for, so the scripted engine
works on a bare install. The options each kind accepts are documented in
``docs/engines.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inference.engine import EngineClient

#: Engine kinds ``create_engine`` knows.
KINDS = ("scripted", "vllm", "openai", "transformers")


def create_engine(kind: str, model: str | None, options: Mapping[str, Any]) -> EngineClient:
    """Build the engine of ``kind`` serving ``model`` (None: the backend's default).

    ``options`` are the backend-specific keys of the ``[engine]`` table. Raises
    ``ValueError`` for an unknown kind or option, and ``ImportError`` (with the
    extra to install) when the backend's packages are missing.
    """
    opts = dict(options)
    if kind == "scripted":
        from inference.backends.scripted import ScriptedEngine

        if model is not None:
            opts.setdefault("model", model)
        try:
            return ScriptedEngine(**opts)
        except TypeError as exc:
            raise ValueError(f"bad [engine] option for scripted: {exc}") from None
    raise ValueError(f"unknown engine kind {kind!r}; expected one of {', '.join(KINDS)}")
