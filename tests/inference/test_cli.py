"""``fablecast model`` and ``fablecast bench engine`` parse and run from the root parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fablecast import cli
from fablecast.inference import model as m


def parser() -> argparse.ArgumentParser:
    return cli.build_parser()


def test_bench_engine_on_scripted(capsys: pytest.CaptureFixture[str]) -> None:
    argv = "bench engine --kind scripted --rooms 3 --tokens 5 --passes 1 --json"
    argv += " --option tokens_per_s=500 --option first_token_s=0"
    args = parser().parse_args(argv.split())
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["engine"] == "scripted" and out["rooms"] == 3
    assert {"engine_tok_s", "served_tok_s", "overhead_ratio", "ttft_ms", "itl_ms"} <= set(out)


def test_every_command_registers() -> None:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {"serve", "watch", "play", "model", "bench"} <= set(sub.choices)


def test_model_prepare(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(m, "prepare_default_model", lambda **kw: tmp_path)
    args = parser().parse_args(["model", "prepare"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path)


def test_model_prepare_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(**kw: object) -> Path:
        raise m.ModelError("no package")

    monkeypatch.setattr(m, "prepare_default_model", fail)
    args = parser().parse_args(["model", "prepare", "--force"])
    assert args.func(args) == 1
    assert "no package" in capsys.readouterr().err
