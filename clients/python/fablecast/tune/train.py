"""Train the narrator's LoRA adapter with peft on CPU (or a GPU when torch sees one).

The base model is the engine's model (the default: SmolLM2-135M-Instruct,
converted by ``fablecast.inference.model``). Each example is rendered with the
model's own chat template exactly as vLLM renders the narration request (the
last message is the prefill, continued), followed by the target and the
end-of-turn token; the loss counts the target only. The adapter is saved
with ``save_pretrained`` (``adapter_config.json``, ``adapter_model.safetensors``)
in float16, plus ``fablecast-adapter.json``: base model, data sha256, settings and losses.

Training uses transformers' ``Trainer`` (a kept library, not a hand loop);
defaults fit the 2-core machine: a few minutes for a few hundred examples.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Modules of a Llama-style block the adapter wraps (attention and MLP).
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: What ``fablecast.inference.backends.vllm`` reads beside peft's files.
MANIFEST = "fablecast-adapter.json"


@dataclass(slots=True)
class TrainConfig:
    """Settings of one training run (saved in the manifest)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    epochs: float = 3.0
    learning_rate: float = 3e-4
    batch_size: int = 4
    grad_accum: int = 2
    max_length: int = 640
    seed: int = 0
    target_modules: list[str] = field(default_factory=lambda: list(TARGET_MODULES))


def encode(
    tokenizer: Any, messages: Sequence[dict[str, str]], target: str, max_length: int
) -> dict[str, list[int]] | None:
    """Token ids and labels (-100 over the prompt) of one example; None when too long."""
    prompt = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=False, continue_final_message=True
    )
    end = tokenizer.eos_token or ""
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t_ids = tokenizer(target + end, add_special_tokens=False)["input_ids"]
    if len(p_ids) + len(t_ids) > max_length:
        return None
    ids = [*p_ids, *t_ids]
    return {"input_ids": ids, "labels": [-100] * len(p_ids) + list(t_ids)}


def train(
    examples: Sequence[dict[str, Any]],
    out: Path,
    *,
    base: str,
    config: TrainConfig | None = None,
    data_sha256: str = "",
    log: Any = print,
) -> dict[str, Any]:
    """Train an adapter on ``examples`` (rows of ``data.Example.to_json``) into ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    cfg = config or TrainConfig()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = [encode(tokenizer, e["messages"], e["target"], cfg.max_length) for e in examples]
    data = [r for r in rows if r is not None]
    if not data:
        raise ValueError("no example fits max_length")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"[tune] {len(data)} examples ({len(rows) - len(data)} too long), {trainable} trainable")
    args = TrainingArguments(
        output_dir=str(out / ".trainer"),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
    )
    t0 = time.monotonic()
    result = trainer.train()
    wall = time.monotonic() - t0
    if not math.isfinite(float(result.training_loss)):
        raise RuntimeError("training diverged (loss is not finite): nothing saved")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    out.mkdir(parents=True, exist_ok=True)
    # Stored in float16 (half the size; vLLM casts adapters to the model's dtype on load).
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = param.data.to(torch.float16)
    model.save_pretrained(str(out))
    # peft records the base model's local path; keep only its name (no machine paths).
    config_path = out / "adapter_config.json"
    adapter_cfg = json.loads(config_path.read_text(encoding="utf-8"))
    adapter_cfg["base_model_name_or_path"] = Path(base).name
    config_path.write_text(json.dumps(adapter_cfg, indent=2) + "\n", encoding="utf-8")
    manifest = {
        "base_model": Path(base).name,
        "examples": len(data),
        "unique_examples": len({json.dumps(e, sort_keys=True) for e in examples}),
        "data_sha256": data_sha256,
        "config": asdict(cfg),
        "train_loss": round(float(result.training_loss), 4),
        "loss_first": round(losses[0], 4) if losses else None,
        "loss_last": round(losses[-1], 4) if losses else None,
        "steps": int(trainer.state.global_step),
        "wall_s": round(wall, 1),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out / ".trainer", ignore_errors=True)
    (out / "README.md").unlink(missing_ok=True)  # peft's model-card stub
    return manifest
