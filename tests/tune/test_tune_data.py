"""``fablecast tune data``: which beats become examples, and what the model learns to write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fablecast.cli import main
from fablecast.inference.story.embed import LexicalEmbedder
from fablecast.tune.data import continuation, keep, read_jsonl, select, write_jsonl

EMB = LexicalEmbedder()

MESSAGES = [
    {"role": "system", "content": "You are a novelist."},
    {"role": "user", "content": "Write the next scene."},
    {"role": "assistant", "content": "Sam follows Lena to the docks,"},
]


def sample(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "preset": "noir",
        "room": "noir",
        "beat": 2,
        "messages": MESSAGES,
        "generated": ", Sam follows Lena past the docks. Fear grips him in the dark.",
        "text": "Sam follows Lena to the docks, Sam follows Lena past the docks. Fear grips him.",
        "choice": "Sam follows Lena to the docks",
        "losers": ["Sam burns the ledger"],
        "tone": "tense",
        "dropped": 0,
    }
    base.update(kw)
    return base


def test_continuation_drops_the_joint_to_the_open_prefill() -> None:
    assert continuation(", she grabs the key.") == " she grabs the key."
    assert continuation(". She runs. Rain.") == " She runs. Rain."
    assert continuation(" walks into the market.") == " walks into the market."


def test_a_beat_that_acts_the_winner_out_in_tone_is_kept() -> None:
    assert keep(sample(), EMB) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"generated": "  "}, "empty"),
        ({"text": "Sam follows Lena and then"}, "cut"),
        ({"generated": ", the audience votes on what Sam does. Fear grips him."}, "meta-talk"),
        (
            {"generated": ", Sam burns the ledger in the dark. Fear grips him in the dark."},
            "does not act the winner out",
        ),
        (
            {"generated": ", Sam follows Lena to the docks and everyone laughs at the joke."},
            "off tone",
        ),
    ],
)
def test_a_beat_that_misses_a_bar_is_left_out_with_its_reason(
    change: dict[str, Any], reason: str
) -> None:
    assert keep(sample(**change), EMB) == reason


def test_select_counts_why_samples_were_left_out() -> None:
    rows = [sample(), sample(generated=""), sample(text="cut and"), sample(beat=5)]
    examples, why = select(rows, EMB)
    assert len(examples) == 2
    assert why == {"empty": 1, "cut": 1}
    assert examples[0].messages[-1]["content"].endswith(",")
    assert examples[0].target.startswith(" Sam follows Lena past the docks.")
    assert examples[0].to_json()["tone"] == "tense"


def test_jsonl_round_trip_and_a_clear_error_for_a_bad_line(tmp_path: Path) -> None:
    rows = [{"a": 1}, {"b": "é"}]
    sha = write_jsonl(tmp_path / "x.jsonl", rows)
    assert len(sha) == 64
    assert read_jsonl(tmp_path / "x.jsonl") == rows
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_tune_data_on_the_scripted_engine_writes_samples_and_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--engine", "scripted", "--story", "noir", "--beats", "3", "--rooms", "2"]
    rc = main(["tune", "data", *args, "--out", str(tmp_path)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    samples = read_jsonl(tmp_path / "samples.jsonl")
    assert summary["samples"] == len(samples) == 6  # 2 rooms x 3 beats
    assert {s["room"] for s in samples} == {"noir", "noir-2"}
    assert summary["examples"] + sum(summary["left_out"].values()) == 6
    for s in samples:
        assert s["messages"][-1]["role"] == "assistant"
        assert s["tone"]


def test_tune_train_refuses_rows_without_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "examples.jsonl"
    data.write_text('{"target": " x."}\n', encoding="utf-8")
    assert main(["tune", "train", "--data", str(data), "--out", str(tmp_path / "a")]) == 2
    assert "rows without messages/target" in capsys.readouterr().err


def test_balance_repeats_rarer_tones_up_to_a_cap() -> None:
    from fablecast.tune.data import balance

    rows = [{"tone": "sad", "i": i} for i in range(9)] + [{"tone": "funny", "i": 0}]
    rows += [{"tone": "calm", "i": i} for i in range(4)]
    out = balance(rows)
    assert out[: len(rows)] == rows
    count = {t: sum(r["tone"] == t for r in out) for t in ("sad", "funny", "calm")}
    assert count == {"sad": 9, "funny": 3, "calm": 9}
    assert balance([]) == []
