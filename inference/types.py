"""Value types that cross the engine seam."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat turn of a prompt."""

    role: Role
    content: str


#: What a request asks for: a beat's prose, one ballot option, a scene cue (JSON) or the
#: story state after a beat (JSON).
RequestKind = Literal["narration", "choices", "cues", "state"]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One continuation request.

    ``messages`` are laid out stable-prefix first (system, world, story so far)
    so the engine's prefix cache hits across beats of a room. A last message
    of role ``assistant`` is a prefill: the backend continues that turn and
    streams only what follows it. ``json_schema`` or ``regex`` ask for
    structured output where the backend supports it.

    ``room``, ``kind``, ``beat`` and ``deadline_s`` are for the scheduler (fair
    share per room, token budget per beat, urgency); ``choice`` and ``n_choices``
    (and ``hints``: the entities a ballot option may name) let the scripted
    engine answer in kind; ``adapter`` names a LoRA adapter the
    backend serves (None: the base model; for narration, the backend's
    narration adapter where it has one). Real engines read only the sampling
    fields, ``json_schema`` and ``adapter``.
    """

    request_id: str
    messages: tuple[ChatMessage, ...]
    kind: RequestKind = "narration"
    beat: int = 0
    #: The winning choice this narration acts out (None: the opening beat).
    choice: str | None = None
    #: Options asked for (``choices`` requests).
    n_choices: int = 0
    #: Seconds from submission by which the request should start (None: no deadline).
    deadline_s: float | None = None
    adapter: str | None = None
    max_tokens: int = 128
    temperature: float = 0.8
    top_p: float = 0.95
    #: OpenAI-style penalty on tokens by how often they already appeared (0: none).
    frequency_penalty: float = 0.0
    #: Multiplicative penalty on tokens of the prompt and the output (1: none).
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: Mapping[str, Any] | None = None
    #: A regular expression the output must match (guided decoding).
    regex: str | None = None
    hints: tuple[str, ...] = ()
    #: Words to favour with a small logit bias (a scene's tone words; backends
    #: that cannot bias tokens ignore it).
    favour: tuple[str, ...] = ()
    #: Words to avoid with a negative logit bias (the opposed tones' words).
    shun: tuple[str, ...] = ()
    room: str = ""


FinishReason = Literal["stop", "length", "abort", "error"]


@dataclass(frozen=True, slots=True)
class GenerationDelta:
    """New text since the previous delta of the same request.

    ``tokens`` counts the tokens behind ``text``. The last delta has ``finished``
    set and a ``finish_reason``. ``complete``: the text ends at a sentence end
    already told apart (the narrator's tone steps hand over whole sentences), so
    the sentence guard need not wait for what follows.
    """

    text: str
    tokens: int = 1
    finished: bool = False
    finish_reason: FinishReason | None = None
    complete: bool = False


@dataclass(frozen=True, slots=True)
class EngineHealth:
    """What ``/readyz`` and the scheduler know about an engine."""

    ready: bool
    engine: str
    model: str
    detail: str = ""


class EngineError(Exception):
    """The engine failed a request (or died). Rooms pause and retry per policy."""


class EngineStalled(EngineError):
    """No token arrived within the stall timeout."""


class EngineBusy(EngineError):
    """The scheduler's bounded queue is full: the request was refused at once.

    Raised by ``ScheduledEngine.generate`` (on the first ``anext``) instead of
    queueing without bound; the room shows "busy" and retries later.
    """
