"""CAPability-style evaluation: judge verdicts, P/R/F1 by hand, LLM judge plumbing, table and chart."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from captioner.eval import (
    DIMENSIONS,
    JUDGE_PROMPT,
    EvalReport,
    Fact,
    LLMJudge,
    RuleJudge,
    evaluate_captions,
    parse_verdict,
    write_chart,
    write_report,
)

CAPTION = "Two red circles move left. The camera pans right."


@pytest.mark.parametrize(("dimension", "value", "verdict"), [
    ("object_color", "red", "correct"), ("object_color", "blue", "wrong"), ("object_color", "grey", "wrong"),
    ("object_counting", "two", "correct"), ("object_counting", "three", "wrong"),
    ("object_category", "circle", "correct"), ("object_category", "triangle", "wrong"),
    ("action", "move left", "correct"), ("action", "move right", "wrong"),  # "pans right" is the camera's
    ("camera_motion", "pan right", "correct"), ("camera_motion", "pan left", "wrong"),
    ("camera_motion", "static", "wrong"), ("scene", "beach", "not_mentioned"), ("ocr", "OPEN 24H", "not_mentioned"),
    ("camera_angle", "low angle", "not_mentioned"), ("style", "cartoon", "not_mentioned"),
])
def test_rule_judge_verdicts(dimension: str, value: str, verdict: str) -> None:
    assert RuleJudge().judge(CAPTION, Fact(dimension, value)) == verdict


def test_rule_judge_scopes_and_literals() -> None:
    judge = RuleJudge()
    assert judge.judge("The camera pans right.", Fact("action", "move right")) == "not_mentioned"
    assert judge.judge("A sign reads 'Open 24h' above the door.", Fact("ocr", "OPEN 24H")) == "correct"
    assert judge.judge("One blue square moves up. The camera is static.", Fact("camera_motion", "static")) == "correct"
    assert judge.judge("3 dogs run", Fact("object_counting", "three")) == "correct"
    assert judge.judge("A grey cat.", Fact("object_color", "grey")) == "correct"
    assert judge.judge("A gray cat.", Fact("object_color", "grey")) == "correct"
    with pytest.raises(ValueError, match="unknown dimension"):
        Fact("colour", "red")
    with pytest.raises(ValueError, match="empty value"):
        Fact("ocr", " ")


def test_precision_recall_f1_by_hand() -> None:
    captions = ["Two red circles move left. The camera pans right.",  # colour ok, count ok, action wrong
                "A blue square.",  # colour wrong, count/action not mentioned
                "Something moves."]  # nothing
    facts = [[{"dimension": "object_color", "value": "red"}, {"dimension": "object_counting", "value": "two"},
              {"dimension": "action", "value": "move up"}],
             [{"dimension": "object_color", "value": "green"}, {"dimension": "object_counting", "value": "three"},
              {"dimension": "action", "value": "move down"}],
             [{"dimension": "object_color", "value": "red"}]]
    report = evaluate_captions(captions, facts)
    colour = report.scores["object_color"]
    assert (colour.total, colour.correct, colour.wrong, colour.not_mentioned) == (3, 1, 1, 1)
    assert colour.precision == pytest.approx(1 / 2) and colour.recall == pytest.approx(1 / 3)
    assert colour.f1 == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    count = report.scores["object_counting"]
    assert (count.correct, count.wrong, count.not_mentioned) == (1, 0, 1)
    assert count.precision == 1.0 and count.recall == 0.5 and count.f1 == pytest.approx(2 / 3)
    action = report.scores["action"]
    assert action.f1 == 0.0 and action.wrong == 1
    assert report.mean_f1 == pytest.approx((colour.f1 + count.f1 + 0.0) / 3)
    table = report.table()
    assert "object_color" in table and "mean F1" in table and "scene" not in table
    assert report.verdicts[0] == ["correct", "correct", "wrong"]
    with pytest.raises(ValueError, match="annotation lists"):
        evaluate_captions(captions[:2], facts)


@pytest.mark.parametrize(("reply", "verdict"), [
    ("correct", "correct"), ("Correct.", "correct"), ("wrong - it says blue", "wrong"),
    ("Not mentioned", "not_mentioned"),
    ("not_mentioned", "not_mentioned"), ("The answer is: incorrect", None), ("", None), ("maybe", None),
    ("wrong, not correct", "wrong"),
])
def test_parse_verdict(reply: str, verdict: str | None) -> None:
    assert parse_verdict(reply) == verdict


def test_llm_judge_asks_one_question_per_fact() -> None:
    rule = RuleJudge()
    asked: list[str] = []

    def oracle(prompts: list[str]) -> list[str]:  # a "judge LLM" that reads the prompt and answers like RuleJudge
        asked.extend(prompts)
        out = []
        for p in prompts:
            caption = re.search(r"Caption: (.*)\n", p).group(1)
            value = re.search(r"is: (.*)\.\n", p).group(1)
            dim = "object_color" if "colour" in p else "object_counting"
            out.append({"not_mentioned": "Not mentioned."}.get(v := rule.judge(caption, Fact(dim, value)), v))
        return out

    captions = [CAPTION, "A blue square."]
    facts = [[Fact("object_color", "red"), Fact("object_counting", "two")], [Fact("object_color", "green"),
                                                                           Fact("object_counting", "one")]]
    judge = LLMJudge(oracle, batch_size=3)
    report = evaluate_captions(captions, facts, judge)
    assert len(asked) == 4 and asked[0] == JUDGE_PROMPT.format(caption=CAPTION, question="the colour of the main "
                                                                                 "objects", value="red")
    assert report.verdicts == [["correct", "correct"], ["wrong", "not_mentioned"]]
    assert judge.unparsed == 0
    garbled = LLMJudge(lambda prompts: ["???"] * len(prompts))
    assert evaluate_captions(captions, facts, garbled).scores["object_color"].not_mentioned == 2
    assert garbled.unparsed == 4


def test_chart_and_report_files(tmp_path: Path) -> None:
    ours = evaluate_captions([CAPTION], [[Fact("object_color", "red"), Fact("camera_motion", "pan left")]])
    other = evaluate_captions(["A red thing."], [[Fact("object_color", "red"), Fact("camera_motion", "pan left")]])
    svg = write_chart({"ours": ours, "baseline": other}, tmp_path / "f1.svg", backend="svg").read_text()
    bars = re.findall(r'data-model="(\w+)" data-dimension="(\w+)" data-f1="([0-9.]+)"', svg)
    assert sorted(bars) == sorted([("ours", "camera_motion", "0.0000"), ("ours", "object_color", "1.0000"),
                                   ("baseline", "camera_motion", "0.0000"), ("baseline", "object_color", "1.0000")])
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    files = write_report({"ours": ours}, tmp_path / "report")
    metrics = json.loads(files["metrics"].read_text())
    assert metrics["ours"]["mean_f1"] == pytest.approx(0.5)
    assert files["chart"].exists() and "object_color" in files["table"].read_text()
    assert set(DIMENSIONS) >= {r["dimension"] for r in metrics["ours"]["dimensions"]}
    assert EvalReport().mean_f1 == 0.0


def test_eval_command_captions_and_scores_a_lake_split(tiny_captioner_dir: Path, tmp_path: Path, capsys) -> None:
    from captioner.data import synthetic_rows, write_examples
    from captioner.eval import main
    from captioner.synthetic import make_clips

    write_examples(tmp_path / "lake", synthetic_rows(make_clips(range(3), ("video", "image")), "eval"))
    main(["--model", str(tiny_captioner_dir), "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "out"),
          "--max-new-tokens", "4", "--judge-model", str(tiny_captioner_dir)])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    (rows,) = metrics.values()
    counts = {r["dimension"]: r["facts"] for r in rows["dimensions"]}
    assert counts == {"action": 2, "camera_motion": 2, "object_category": 3, "object_color": 3, "object_counting": 3}
    assert "mean F1" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no annotated examples"):
        main(["--model", str(tiny_captioner_dir), "--lake", str(tmp_path / "lake"), "--split", "train",
              "--out", str(tmp_path / "out2")])


HEDGE = ("One, two, three or four red, green, blue, yellow or grey circles, squares or triangles move left, "
         "move right, move up or move down. The camera is static, pans left, pans right, tilts up or tilts down.")


def test_rule_judge_gives_no_credit_for_hedging() -> None:
    from captioner.synthetic import make_clips

    clips = make_clips(range(40), ("video", "video", "image"))
    hedged = evaluate_captions([HEDGE] * len(clips), [c.facts for c in clips])
    assert hedged.mean_f1 < 0.1, hedged.table()  # every single-valued fact is named among others: wrong
    assert all(s.correct == 0 for s in hedged.scores.values())
    exact = evaluate_captions([c.caption for c in clips], [c.facts for c in clips])
    assert exact.mean_f1 == 1.0 and all(s.f1 == 1.0 for s in exact.scores.values())
    judge = RuleJudge()
    assert judge.judge("A red or blue car.", Fact("object_color", "red")) == "wrong"
    # an item annotated with two colours (or two actions) is multi-valued: naming both is no hedge
    two_colours = [Fact("object_color", "red"), Fact("object_color", "blue")]
    assert judge(["A red car and a blue car."], [two_colours]) == [["correct", "correct"]]
    two_actions = [Fact("action", "walk"), Fact("action", "talk")]
    assert judge(["A man walks and talks."], [two_actions]) == [["correct", "correct"]]
    assert judge(["A man walks and talks."], [[Fact("action", "walk")]]) == [["wrong"]]
    # OCR / event values are literal and never single-valued
    assert judge(["Signs read OPEN and CLOSED."], [[Fact("ocr", "OPEN")]]) == [["correct"]]


def test_llm_judge_records_a_rejected_prompt_and_goes_on() -> None:
    from captioner.processor import CaptionInputError

    def generate(prompts: list[str]) -> list[str]:
        if any("<|reserved|>" in p for p in prompts):
            raise CaptionInputError("instruction contains the reserved token '<|reserved|>'")
        return ["correct"] * len(prompts)

    captions = [CAPTION, "A <|reserved|> caption.", "A red thing."]
    facts = [[Fact("object_color", "red")], [Fact("object_color", "red"), Fact("object_counting", "one")],
             [Fact("object_color", "red")]]
    judge = LLMJudge(generate, batch_size=4)
    report = evaluate_captions(captions, facts, judge)
    assert report.verdicts == [["correct"], ["not_mentioned", "not_mentioned"], ["correct"]]
    assert judge.rejected == 2 and judge.unparsed == 2
    assert report.scores["object_color"].correct == 2


def test_llm_judge_with_a_real_backend_survives_reserved_tokens(tiny_parts) -> None:
    from captioner.backends.hf import HFBackend

    model, _, processor = tiny_parts
    reserved = processor.tokenizer.convert_ids_to_tokens(model.config.image_token_id)
    judge = LLMJudge(HFBackend(None, model=model, processor=processor), batch_size=4)
    report = evaluate_captions([CAPTION, f"A {reserved} red circle."],
                               [[Fact("object_color", "red")], [Fact("object_color", "red")]], judge)
    assert judge.rejected == 1 and report.verdicts[1] == ["not_mentioned"]
