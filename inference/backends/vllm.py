"""In-process vLLM ``AsyncLLM``: continuous batching, delta outputs, structured outputs.

One ``AsyncLLM`` serves every room. Requests are chat messages rendered by
vLLM's own renderer (the model's chat template), sampled with
``RequestOutputKind.DELTA`` so each output carries only the new tokens, and
constrained with ``StructuredOutputsParams(json=...)`` when the request has a
``json_schema``. Closing a stream aborts its request (vLLM's ``generate`` does
that on ``GeneratorExit``); ``abort(request_id)`` aborts from outside.

LoRA adapters (``adapters``: name -> folder of peft's ``save_pretrained``) are
served through vLLM's LoRA support; a request names one with
``GenerationRequest.adapter``. ``narration_adapter`` is the adapter that
narration requests naming none get: none (default), a name in ``adapters``,
or ``narrator``, the shipped narrator adapter of the default model
(``fablecast.inference.adapters``; docs/quality.md has its figures). vLLM's
LoRA support is switched on only when some adapter is served.

Failure rules: a dead engine core (``EngineDeadError``) or any other vLLM error
becomes ``EngineError`` in the stream that saw it; ``health()`` then reports
not ready (``AsyncLLM.errored``), and every later ``generate`` fails at once.

vLLM starts worker processes: a program that creates this engine must guard
its entry point with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fablecast.inference.types import (
    ChatMessage,
    EngineError,
    EngineHealth,
    FinishReason,
    GenerationDelta,
    GenerationRequest,
)

#: Logit bias given to each token of ``GenerationRequest.favour`` words.
FAVOUR_BIAS = 2.5
#: Logit bias given to each token of ``GenerationRequest.shun`` words.
SHUN_BIAS = -4.0

#: Defaults tuned on a small CPU machine; see docs/engines.md.
DEFAULT_MAX_NUM_SEQS = 32
DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_KV_CACHE_GB = 2


def vllm_available() -> bool:
    """Whether vLLM can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def auto_dtype() -> str:
    """``bfloat16`` where computed natively (CUDA, AVX512-BF16, AMX), else ``float32``.

    Measured on a 2-core AVX2 CPU (no native bf16): bf16 41.6 tok/s vs fp32
    121 tok/s at 32 streams (oneDNN falls back to a slow bf16 linear there).
    """
    try:
        import torch

        if torch.cuda.is_available():
            return "bfloat16"
    except ImportError:  # pragma: no cover
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def _finish(reason: str | None) -> FinishReason | None:
    if reason is None:
        return None
    if reason in ("stop", "length", "abort"):
        return reason  # type: ignore[return-value]
    return "error" if reason == "error" else "stop"


class VLLMEngine:
    """``EngineClient`` over an in-process vLLM ``AsyncLLM``.

    Options (the ``[engine]`` table, kind ``vllm``): ``dtype`` (``auto``: see
    ``auto_dtype``; or ``bfloat16``, ``float32``),
    ``max_num_seqs`` (batch size; also ``max_concurrency``), ``max_model_len``,
    ``kv_cache_gb`` (CPU KV cache, sets ``VLLM_CPU_KVCACHE_SPACE``),
    ``enforce_eager`` (skip torch.compile: faster start, slower decode),
    ``seed``, ``request_seeds`` (pass requests' seeds to vLLM; default: not on
    CPU, where vLLM 0.32 kills the engine core on a seeded request whose prefill
    is chunked: "CPU Generator does not use offset"), ``engine_args`` (any
    further ``AsyncEngineArgs`` fields).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str = "auto",
        max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
        max_model_len: int = DEFAULT_MAX_MODEL_LEN,
        kv_cache_gb: float | None = DEFAULT_KV_CACHE_GB,
        enforce_eager: bool = False,
        seed: int = 0,
        request_seeds: bool | None = None,
        engine_args: Mapping[str, Any] | None = None,
        adapters: Mapping[str, str] | None = None,
        narration_adapter: str | None = None,
    ) -> None:
        self._model_cfg = model
        self._adapters_cfg = dict(adapters or {})
        self._narration_adapter_cfg = narration_adapter
        #: Adapter name -> LoRARequest, resolved at start.
        self._loras: dict[str, Any] = {}
        #: The adapter narration requests get by default (None: the base model).
        self.narration_adapter: str | None = None
        self._model = model or "default"
        self.dtype = dtype
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.kv_cache_gb = kv_cache_gb
        self.enforce_eager = enforce_eager
        self.seed = seed
        self.request_seeds = request_seeds
        self.engine_args = dict(engine_args or {})
        self._llm: Any = None
        self._failure: str | None = None
        self._starting: asyncio.Lock | None = None

    # -- EngineClient -------------------------------------------------------------

    @property
    def name(self) -> str:
        """``vllm``."""
        return "vllm"

    @property
    def model(self) -> str:
        """The model path or name served."""
        return self._model

    @property
    def max_concurrency(self) -> int:
        """vLLM's batch size (``max_num_seqs``)."""
        return self.max_num_seqs

    @property
    def llm(self) -> Any:
        """The underlying ``AsyncLLM`` (None before ``start``)."""
        return self._llm

    async def start(self) -> None:
        """Provision the model if it is the default, then build and warm up ``AsyncLLM``."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._llm is not None:
                return
            from fablecast.inference.model import resolve_model

            path = await asyncio.to_thread(resolve_model, self._model_cfg)
            self._model = path
            self._resolve_adapters()
            self._llm = await asyncio.to_thread(self._build, path)
            if self.request_seeds is None:
                from vllm.platforms import current_platform

                self.request_seeds = not current_platform.is_cpu()
            self._failure = None
            # One tiny request compiles/warms what the first room would otherwise wait on.
            warm = GenerationRequest(
                "fablecast-warmup", (ChatMessage("user", "Hello"),), max_tokens=2, temperature=0.0
            )
            async for _delta in self.generate(warm):
                pass

    def _build(self, path: str) -> Any:
        if self.kv_cache_gb is not None:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(self.kv_cache_gb)))
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs: dict[str, Any] = {
            "model": path,
            "dtype": auto_dtype() if self.dtype == "auto" else self.dtype,
            "max_num_seqs": self.max_num_seqs,
            "max_model_len": self.max_model_len,
            "enforce_eager": self.enforce_eager,
            "seed": self.seed,
            "disable_log_stats": True,
            # Compact JSON: a small model otherwise wanders off into whitespace.
            "structured_outputs_config": StructuredOutputsConfig(
                backend="xgrammar", disable_any_whitespace=True
            ),
        }
        if self._loras:
            from fablecast.inference.adapters import lora_rank

            kwargs["enable_lora"] = True
            kwargs["max_loras"] = min(4, len(self._loras))
            kwargs["max_lora_rank"] = max(lora_rank(r.lora_path) for r in self._loras.values())
        kwargs.update(self.engine_args)
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))

    def _resolve_adapters(self) -> None:
        """Check the configured adapters and the narration adapter (raises ValueError)."""
        from vllm.lora.request import LoRARequest

        from fablecast.inference.adapters import NARRATOR, check_adapter, shipped_narrator
        from fablecast.inference.model import is_default

        folders = {name: check_adapter(folder) for name, folder in self._adapters_cfg.items()}
        choice = self._narration_adapter_cfg
        if choice in (None, "", "none"):
            choice = None
        elif choice == NARRATOR and NARRATOR not in folders:
            shipped = shipped_narrator() if is_default(self._model_cfg) else None
            if shipped is None:
                raise ValueError(
                    "[engine] narration_adapter 'narrator' is the shipped adapter of the default "
                    "model; name another model's adapter in adapters"
                )
            folders[NARRATOR] = shipped
        elif choice not in folders:
            raise ValueError(
                f"[engine] narration_adapter {choice!r} is not in adapters "
                f"({', '.join(folders) or 'none'})"
            )
        self.narration_adapter = choice
        self._loras = {
            name: LoRARequest(name, i, str(folder))
            for i, (name, folder) in enumerate(sorted(folders.items()), 1)
        }

    @property
    def adapters(self) -> list[str]:
        """Names of the adapters served (known after ``start``)."""
        return sorted(self._loras)

    def _lora(self, request: GenerationRequest) -> Any:
        name = request.adapter
        if name is None and request.kind == "narration":
            name = self.narration_adapter
        if name is None:
            return None
        lora = self._loras.get(name)
        if lora is None:
            raise EngineError(
                f"adapter {name!r} is not served (adapters: {', '.join(self._loras) or 'none'})"
            )
        return lora

    def health(self) -> EngineHealth:
        """Ready when started and vLLM's engine core is alive."""
        llm = self._llm
        if llm is None:
            return EngineHealth(False, self.name, self._model, "not started")
        if self._failure is not None or llm.errored:
            return EngineHealth(False, self.name, self._model, self._failure or "engine dead")
        detail = f"max_num_seqs {self.max_num_seqs}"
        if self.narration_adapter:
            detail += f", narration adapter {self.narration_adapter}"
        return EngineHealth(True, self.name, self._model, detail)

    async def abort(self, request_id: str) -> None:
        """Abort ``request_id`` in vLLM (its stream ends with ``abort``)."""
        if self._llm is not None and not self._llm.errored:
            await self._llm.abort(request_id)

    async def close(self) -> None:
        """Shut the engine core and its workers down."""
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream ``request``'s continuation as deltas."""
        return self._generate(request)

    # -- internals ------------------------------------------------------------------

    def _sampling(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        structured = None
        if request.json_schema is not None:
            structured = StructuredOutputsParams(json=dict(request.json_schema))
        elif request.regex is not None:
            structured = StructuredOutputsParams(regex=request.regex)
        bias = self._bias(request.favour, request.shun) if request.favour or request.shun else None
        return SamplingParams(
            logit_bias=bias,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            frequency_penalty=request.frequency_penalty,
            repetition_penalty=request.repetition_penalty,
            seed=request.seed if self.request_seeds else None,
            stop=list(request.stop) or None,
            output_kind=RequestOutputKind.DELTA,
            structured_outputs=structured,
        )

    def _bias(self, favour: tuple[str, ...], shun: tuple[str, ...] = ()) -> dict[int, float] | None:
        """Token ids of the words (in their spaced, lower and capitalized forms) -> bias:
        ``FAVOUR_BIAS`` for ``favour``, ``SHUN_BIAS`` for ``shun`` (a favoured word wins)."""
        cache: dict[str, list[int]] = self.__dict__.setdefault("_favour_ids", {})
        tok = self._llm.tokenizer
        if tok is None:
            return None
        out: dict[int, float] = {}
        for words, bias in ((shun, SHUN_BIAS), (favour, FAVOUR_BIAS)):
            for word in words:
                ids = cache.get(word)
                if ids is None:
                    ids = []
                    for form in dict.fromkeys(
                        (f" {word}", f" {word.lower()}", f" {word.capitalize()}")
                    ):
                        enc = tok.encode(form, add_special_tokens=False)
                        if len(enc) == 1:  # only whole-word tokens: no fragments biased
                            ids.append(int(enc[0]))
                    cache[word] = ids
                for i in ids:
                    out[i] = bias
        return out or None

    async def _prompt(self, request: GenerationRequest) -> Any:
        from vllm.renderers.params import ChatParams

        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        # The assistant turn must be opened by the template, or the model writes the
        # role header itself ("assistant\n...") into the story. A last assistant
        # message is a prefill: the template leaves that turn open to be continued.
        if request.messages and request.messages[-1].role == "assistant":
            kwargs = {"add_generation_prompt": False, "continue_final_message": True}
        else:
            kwargs = {"add_generation_prompt": True}
        params = ChatParams(chat_template_kwargs=kwargs)
        _convs, inputs = await self._llm.renderer.render_chat_async([messages], params)
        return inputs[0]

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        llm = self._llm
        if llm is None:
            raise EngineError("vllm engine not started")
        if self._failure is not None or llm.errored:
            raise EngineError(f"vllm engine down: {self._failure or 'engine dead'}")
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            lora = self._lora(request)
            prompt = await self._prompt(request)
            params = self._sampling(request)
            stream = llm.generate(prompt, params, request.request_id, lora_request=lora)
            try:
                async for out in stream:
                    completion = out.outputs[0]
                    reason = _finish(completion.finish_reason) if out.finished else None
                    if out.finished and reason is None:
                        reason = "stop"
                    yield GenerationDelta(
                        completion.text,
                        len(completion.token_ids),
                        finished=out.finished,
                        finish_reason=reason,
                    )
            finally:
                await stream.aclose()
        except EngineDeadError as exc:
            self._failure = f"engine core died: {exc}"
            raise EngineError(self._failure) from exc
        except (EngineError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            if llm.errored:
                self._failure = f"engine core died: {exc}"
            raise EngineError(f"vllm request failed: {type(exc).__name__}: {exc}") from exc
