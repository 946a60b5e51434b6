"""transformers' own continuous batching, for machines without vLLM.

The model runs in transformers' ``ContinuousBatchingManager`` (paged attention,
one background thread that batches every open request); each request streams
through ``register_result_handler``, which calls back on the event loop with
the cumulative tokens so far. This backend turns that into text deltas,
decoding incrementally so multi-byte characters are never split.

Structured output: the manager has no grammar-constrained decoding hook, so a
request's ``json_schema`` is not enforced here; the prompt already asks for
JSON and ``inference.prompts.parse_choices`` reads JSON or numbered lines, with
one retry in the Narrator (documented in docs/engines.md).

Failure rules: a fatal error of the batching thread fails every open stream
with ``EngineError`` and turns ``health()`` not ready.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

from fablecast.inference.types import (
    EngineError,
    EngineHealth,
    FinishReason,
    GenerationDelta,
    GenerationRequest,
)

_ABORT = object()


class TransformersEngine:
    """``EngineClient`` over ``model.init_continuous_batching()``.

    Options (kind ``transformers``): ``dtype`` (``float32``: fastest on CPU),
    ``attn_implementation`` (``paged|sdpa``), ``max_batch`` (requests per batch,
    also ``max_concurrency``), ``num_blocks`` (KV cache blocks), ``temperature`` and
    ``top_p`` (defaults).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str = "float32",
        attn_implementation: str = "paged|sdpa",
        max_batch: int = 32,
        num_blocks: int | None = 512,
        temperature: float = 0.8,
        top_p: float = 0.95,
    ) -> None:
        self._model_cfg = model
        self._model = model or "default"
        self.dtype = dtype
        self.attn_implementation = attn_implementation
        self.max_batch = max_batch
        self.num_blocks = num_blocks
        self.temperature = temperature
        self.top_p = top_p
        self._tok: Any = None
        self._hf: Any = None
        self._mgr: Any = None
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        self._failure: str | None = None
        self._ids = itertools.count()
        self._lock: asyncio.Lock | None = None

    @property
    def name(self) -> str:
        """``transformers``."""
        return "transformers"

    @property
    def model(self) -> str:
        """The model path or name served."""
        return self._model

    @property
    def max_concurrency(self) -> int:
        """Requests per batch."""
        return self.max_batch

    async def start(self) -> None:
        """Load the model, start the batching thread, warm it up."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._mgr is not None:
                return
            from fablecast.inference.model import resolve_model

            path = await asyncio.to_thread(resolve_model, self._model_cfg)
            self._model = path
            await asyncio.to_thread(self._load, path)
            warm = GenerationRequest(
                "fablecast-warmup", (), max_tokens=4, temperature=self.temperature
            )
            async for _d in self.generate(warm):
                pass

    def _load(self, path: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        self._tok = AutoTokenizer.from_pretrained(path)
        self._hf = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, self.dtype), attn_implementation=self.attn_implementation
        )
        gen = GenerationConfig(
            do_sample=True,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=128,
            eos_token_id=self._tok.eos_token_id,
            pad_token_id=self._tok.pad_token_id,
        )
        cb = ContinuousBatchingConfig(
            per_request_processors=True,
            max_requests_per_batch=self.max_batch,
            num_blocks=self.num_blocks,
        )
        self._mgr = self._hf.init_continuous_batching(
            generation_config=gen, continuous_batching_config=cb
        )
        self._mgr.start()

    def health(self) -> EngineHealth:
        """Ready while the batching thread runs."""
        if self._mgr is None:
            return EngineHealth(False, self.name, self._model, "not started")
        if self._failure is not None or not self._mgr.is_running():
            return EngineHealth(False, self.name, self._model, self._failure or "stopped")
        return EngineHealth(True, self.name, self._model, f"max_batch {self.max_batch}")

    async def abort(self, request_id: str) -> None:
        """Cancel ``request_id``; its stream ends with ``abort``."""
        q = self._queues.get(request_id)
        if q is not None and self._mgr is not None:
            self._mgr.cancel_request(request_id)
            q.put_nowait(_ABORT)

    async def close(self) -> None:
        """Stop the batching thread; open streams fail."""
        mgr, self._mgr = self._mgr, None
        for q in self._queues.values():
            q.put_nowait(EngineError("engine closed"))
        if mgr is not None:
            await asyncio.to_thread(mgr.stop, True)

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream ``request``'s continuation as deltas."""
        return self._generate(request)

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        if not request.messages:
            return [int(self._tok.bos_token_id or 1)]
        msgs = [{"role": m.role, "content": m.content} for m in request.messages]
        prefill = bool(request.messages) and request.messages[-1].role == "assistant"
        ids = self._tok.apply_chat_template(
            msgs, add_generation_prompt=not prefill, continue_final_message=prefill
        )
        if not isinstance(ids, list):
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        mgr = self._mgr
        if mgr is None:
            raise EngineError("transformers engine not started")
        if self._failure is not None or not mgr.is_running():
            raise EngineError(f"transformers engine down: {self._failure or 'stopped'}")
        rid = request.request_id
        if rid in self._queues:
            rid = f"{rid}#{next(self._ids)}"
        q: asyncio.Queue[Any] = asyncio.Queue()
        self._queues[rid] = q
        if rid != request.request_id:
            self._queues[request.request_id] = q
        finished = False
        try:
            ids = self._prompt_ids(request)
            mgr.register_result_handler(rid, q.put_nowait)
            kwargs: dict[str, Any] = {}
            if request.temperature > 0:
                kwargs["temperature"] = float(request.temperature)
            added = mgr.add_request(
                ids, request_id=rid, max_new_tokens=request.max_tokens, streaming=True, **kwargs
            )
            if added is None:
                raise EngineError("transformers engine refused the request")
            sent_tokens = 0
            sent_text = ""
            while True:
                try:
                    async with asyncio.timeout(1.0):
                        out = await q.get()
                except TimeoutError:
                    self._check_thread()  # a dead thread never calls back: notice it
                    continue
                if out is _ABORT:
                    finished = True
                    yield GenerationDelta("", 0, finished=True, finish_reason="abort")
                    return
                if isinstance(out, BaseException):
                    raise out
                if out.error:
                    self._check_thread()
                    raise EngineError(f"transformers request failed: {out.error}")
                tokens = list(out.generated_tokens)
                done = bool(out.is_finished())
                text = self._tok.decode(tokens, skip_special_tokens=True)
                # Hold back a trailing replacement char: a multi-byte char is mid-way.
                stable = text if done else text.rstrip("\ufffd")
                new_text = stable[len(sent_text) :] if stable.startswith(sent_text) else ""
                new_tokens = len(tokens) - sent_tokens
                if not new_text and not done:
                    continue
                reason: FinishReason | None = None
                if done:
                    reason = "length" if len(tokens) >= request.max_tokens else "stop"
                sent_text += new_text
                sent_tokens = len(tokens)
                yield GenerationDelta(
                    new_text, max(new_tokens, 0), finished=done, finish_reason=reason
                )
                if done:
                    finished = True
                    return
        finally:
            self._queues.pop(rid, None)
            self._queues.pop(request.request_id, None)
            if not finished and self._mgr is not None:
                self._mgr.cancel_request(rid)

    def _check_thread(self) -> None:
        mgr = self._mgr
        if mgr is None:
            return
        fatal = getattr(getattr(mgr, "background_thread_status", None), "fatal_error", None)
        if fatal is not None or not mgr.is_running():
            self._failure = f"batching thread failed: {fatal}"
            for q in list(self._queues.values()):
                q.put_nowait(EngineError(self._failure))
