"""The engine factory the server uses."""

from __future__ import annotations

import importlib.util

import pytest

from fablecast.inference.backends import KINDS, create_engine
from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.inference.engine import EngineClient


def test_scripted_with_options() -> None:
    engine = create_engine("scripted", None, {"tokens_per_s": 50.0, "max_concurrency": 7})
    assert isinstance(engine, ScriptedEngine) and isinstance(engine, EngineClient)
    assert engine.max_concurrency == 7 and engine.tokens_per_s == 50.0


def test_scripted_model_name() -> None:
    assert create_engine("scripted", "demo", {}).model == "demo"


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown engine kind"):
        create_engine("nope", None, {})


def test_unknown_option() -> None:
    with pytest.raises(ValueError, match="bad \\[engine\\] option"):
        create_engine("scripted", None, {"bogus": 1})


@pytest.mark.parametrize("kind", ["vllm", "transformers", "openai"])
def test_real_kinds_build_without_starting(kind: str) -> None:
    module = {"vllm": "vllm", "transformers": "transformers", "openai": "httpx"}[kind]
    opts = {"base_url": "http://127.0.0.1:9/v1"} if kind == "openai" else {}
    if importlib.util.find_spec(module) is None:
        with pytest.raises(ImportError, match="pip install"):
            create_engine(kind, None, opts)
        return
    engine = create_engine(kind, None, opts)
    assert engine.name == kind and isinstance(engine, EngineClient)
    assert not engine.health().ready
    with pytest.raises(ValueError):
        create_engine(kind, None, {**opts, "bogus": 1})


def test_kinds_listed() -> None:
    assert set(KINDS) == {"scripted", "vllm", "openai", "transformers"}
