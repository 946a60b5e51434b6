"""LoRA adapters: the shipped narrator adapter and checks on adapter folders.

An adapter folder is what peft's ``save_pretrained`` writes
(``adapter_config.json``, ``adapter_model.safetensors``) plus, for adapters
made by ``fablecast tune train``, ``fablecast-adapter.json`` (base model, data
hash, settings, losses). The narrator adapter for the default model ships in
``narrator-smollm2-135m/`` beside this file (docs/quality.md has its figures).
"""

from __future__ import annotations

import json
from pathlib import Path

#: The name narration requests use for the shipped narrator adapter.
NARRATOR = "narrator"
#: Folder of the shipped narrator adapter (trained on the default model).
SHIPPED = Path(__file__).resolve().parent / "narrator-smollm2-135m"
#: Ranks vLLM's LoRA kernels accept as ``max_lora_rank``.
_VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def check_adapter(folder: str | Path) -> Path:
    """``folder`` as a path, after checking that it holds a peft LoRA adapter (ValueError)."""
    path = Path(folder).expanduser()
    config = path / "adapter_config.json"
    if not config.is_file():
        raise ValueError(f"adapter {str(folder)!r}: no adapter_config.json in {path}")
    if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise ValueError(f"adapter {str(folder)!r}: no adapter_model.safetensors in {path}")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"adapter {str(folder)!r}: adapter_config.json: {exc}") from None
    if str(data.get("peft_type", "")).upper() != "LORA":
        raise ValueError(f"adapter {str(folder)!r}: not a LoRA adapter ({data.get('peft_type')})")
    return path


def lora_rank(folder: str | Path) -> int:
    """The adapter's rank rounded up to one vLLM accepts as ``max_lora_rank``."""
    data = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8"))
    rank = int(data.get("r", 8))
    return next((r for r in _VLLM_RANKS if r >= rank), rank)


def shipped_narrator() -> Path | None:
    """The shipped narrator adapter's folder, if it is installed (None otherwise)."""
    try:
        return check_adapter(SHIPPED)
    except ValueError:
        return None
