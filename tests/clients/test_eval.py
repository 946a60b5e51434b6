"""``fablecast eval``: the metrics (pure) and a short run on the scripted engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from fablecast.cli import main
from fablecast.eval.metrics import BeatRecord, percentile, score
from fablecast.eval.run import evaluate, transcript
from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.inference.story.embed import LexicalEmbedder

EMB = LexicalEmbedder()


def rec(beat: int, text: str, generated: str, **kw: object) -> BeatRecord:
    return BeatRecord(beat=beat, text=text, generated=generated, **kw)  # type: ignore[arg-type]


def test_metrics_count_what_they_say() -> None:
    loop = "the rain fell on the roofs of the old city all night long."
    story = [
        rec(
            1,
            f"Sam waits. {loop}",
            loop,
            tone="sad",
            options=["Sam follows Lena", "Sam hides the ledger"],
            entities=["Lena", "the ledger"],
            subject="Sam",
        ),
        rec(
            2,
            f"Sam follows Lena. {loop}",
            " Sam follows Lena to the pier.",
            choice="Sam follows Lena",
            losers=["Sam hides the ledger"],
            options=["Sam climbs 1. Fast", "Sam climbs 2. Fast"],
            entities=["Lena"],
            subject="Sam",
            first_token_s=0.2,
        ),
        rec(
            3,
            "The audience decides and",
            "",
            choice="Sam runs",
            losers=["Sam hides the ledger"],
            cue_source="fallback",
            first_token_s=0.4,
        ),
    ]
    out = score([story], EMB)
    assert out["beats"] == 3
    assert out["loop_rate"] == round(1 / 3, 3)
    assert out["meta_talk_rate"] == round(1 / 3, 3)
    assert out["cut_rate"] == round(1 / 3, 3)
    assert out["ballots_valid_rate"] == 0.5
    assert out["choice_adherence"] == 0.5  # beat 2 adheres; beat 3 has no own text
    assert out["cues_valid_rate"] == round(2 / 3, 3) and out["cues_fallback"] == 1
    assert out["vote_close_to_first_token_s"] == {"p50": 0.2, "p95": 0.4}


def test_loops_do_not_cross_stories() -> None:
    t = "one two three four five six seven eight nine."
    assert score([[rec(1, t, t)], [rec(1, t, t)]], EMB)["loop_rate"] == 0.0


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0


async def test_scripted_run_plays_every_preset() -> None:
    engine = ScriptedEngine(tokens_per_s=5000, first_token_s=0)
    await engine.start()
    runs, report = await evaluate(engine, ["noir", "wuxia"], 3, EMB)
    assert set(report["presets"]) == {"noir", "wuxia"}
    o = report["overall"]
    assert o["beats"] == 6 and o["cut_rate"] == 0.0 and o["meta_talk_rate"] == 0.0
    assert o["ballots_valid_rate"] == 1.0 and o["cues_valid_rate"] == 1.0
    # The scripted audience walks the winner through every ballot position.
    assert runs[0].winners == [1, 2, 0]
    assert "Beat 2" in transcript(runs[0])


def test_a_bad_spec_is_refused_before_the_engine_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('title = "x"\npremise = "y"\nmood = 1\n')
    assert main(["eval", "--story", str(spec), "--engine", "vllm"]) == 2
    assert f"{spec}: mood: unknown key" in capsys.readouterr().err
