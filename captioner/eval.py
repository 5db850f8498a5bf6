"""CAPability-style caption evaluation over the report's ten dimensions (section 3.3.4).

Each evaluated item has annotated facts (``Fact(dimension, value)``, e.g. ``object_color = red``). A judge reads
the caption and marks every fact ``correct`` (the caption states it), ``wrong`` (the caption states something
else for that dimension) or ``not_mentioned``. Per dimension::

    precision = correct / (correct + wrong)      recall = correct / all facts      F1 = 2PR / (P + R)

Judges: ``RuleJudge`` (deterministic; matches each dimension's vocabulary of phrases, for templated captions
and tests) and ``LLMJudge`` (any text generator, e.g. a captioner backend's ``generate_text``: asks one question
per fact and parses the one-word verdict). ``EvalReport`` gives a text table, JSON rows and a bar chart
(matplotlib when installed, else an SVG written directly).
"""
from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from captioner.processor import CaptionInputError

DIMENSIONS: tuple[str, ...] = ("action", "camera_angle", "camera_motion", "object_category", "object_color",
                               "object_counting", "ocr", "scene", "style", "event")
DIMENSION_QUESTIONS: dict[str, str] = {
    "action": "what the subjects are doing or how they move", "camera_angle": "the camera angle or shot size",
    "camera_motion": "how the camera moves", "object_category": "what kind of objects are shown",
    "object_color": "the colour of the main objects", "object_counting": "how many main objects there are",
    "ocr": "the visible text", "scene": "the scene or location", "style": "the visual style",
    "event": "what happens"}

Verdict = Literal["correct", "wrong", "not_mentioned"]
VERDICTS: tuple[str, ...] = ("correct", "wrong", "not_mentioned")


def _words(*alternatives: str) -> list[str]:
    return [rf"\b{a}\b" for a in alternatives]


_COUNT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_CAMERA = r"\bcamera\b[^.]*?"
_MOVE = r"\bmov(?:e|es|ed|ing)\s+(?:to\s+the\s+|towards?\s+the\s+)?"
# value -> regular expressions (case-insensitive); a fact's value that is not listed is matched literally
DEFAULT_VOCABULARY: dict[str, dict[str, list[str]]] = {
    "object_color": {c: _words(c) for c in ("red", "green", "blue", "yellow", "orange", "purple", "pink", "brown",
                                            "black", "white")} | {"grey": _words("grey", "gray")},
    "object_counting": {w: _words(w, str(i)) + ([r"\ba single\b"] if i == 1 else [])
                        for i, w in enumerate(_COUNT_WORDS) if i > 0},
    "object_category": {s: _words(s, s + "s") for s in ("circle", "square", "triangle", "person", "dog", "cat",
                                                         "car", "bird", "tree", "building")},
    "action": {f"move {d}": [_MOVE + d + r"\b"] + ([_MOVE + "upwards?"] if d == "up" else [])
               + ([_MOVE + "downwards?"] if d == "down" else []) for d in ("left", "right", "up", "down")}
    | {a: _words(a, a + "s", a + "ing") for a in ("walk", "run", "jump", "sit", "stand", "talk", "dance")},
    "camera_motion": {"static": [_CAMERA + r"\b(?:static|still|fixed|stationary|does not move)\b"],
                      "pan left": [_CAMERA + r"\bpan(?:s|ning)?\s+(?:to\s+the\s+)?left\b"],
                      "pan right": [_CAMERA + r"\bpan(?:s|ning)?\s+(?:to\s+the\s+)?right\b"],
                      "tilt up": [_CAMERA + r"\btilt(?:s|ing)?\s+up(?:wards?)?\b"],
                      "tilt down": [_CAMERA + r"\btilt(?:s|ing)?\s+down(?:wards?)?\b"],
                      "zoom in": [_CAMERA + r"\bzoom(?:s|ing)?\s+in\b"],
                      "zoom out": [_CAMERA + r"\bzoom(?:s|ing)?\s+out\b"]},
    "camera_angle": {"eye level": _words("eye[- ]level"), "high angle": _words("high[- ]angle"),
                     "low angle": _words("low[- ]angle"), "top-down": _words("top[- ]down", "overhead",
                                                                              "bird'?s[- ]eye"),
                     "close-up": _words("close[- ]up"), "wide shot": _words("wide[- ]shot", "wide[- ]angle")},
    "scene": {s: _words(s) for s in ("indoor", "outdoor", "city", "street", "beach", "forest", "mountain", "room",
                                     "kitchen", "office", "field", "desert", "snow", "underwater")},
    "style": {"realistic": _words("realistic", "photorealistic", "photograph"),
              "cartoon": _words("cartoon", "animated", "animation"), "painting": _words("painting", "painted"),
              "sketch": _words("sketch", "drawing"), "3d render": _words("3d render", "cgi", "rendered")},
}


# dimensions whose facts have one true value per item when annotated once (an item annotated with two colours,
# or two actions, is multi-valued in that dimension and naming several values is then no hedge)
SINGLE_VALUED: frozenset[str] = frozenset({"object_color", "object_counting", "object_category", "camera_motion",
                                           "action"})


@dataclass(frozen=True)
class Fact:
    """One annotated fact of an item: ``dimension`` (one of ``DIMENSIONS``) and its true ``value``."""

    dimension: str
    value: str

    def __post_init__(self) -> None:
        if self.dimension not in DIMENSIONS:
            raise ValueError(f"unknown dimension {self.dimension!r}; expected one of {DIMENSIONS}")
        if not str(self.value).strip():
            raise ValueError(f"fact for {self.dimension} has an empty value")


def as_facts(items: Sequence[Fact | Mapping[str, str]]) -> list[Fact]:
    """Facts from ``Fact``s or ``{"dimension": ..., "value": ...}`` dicts."""
    return [f if isinstance(f, Fact) else Fact(str(f["dimension"]), str(f["value"])) for f in items]


# --------------------------------------------------------------------------------------------------- judges
def _literal(value: str) -> str:
    return r"(?<!\w)" + r"\s+".join(re.escape(w) for w in value.split()) + r"(?!\w)"


class RuleJudge:
    """Deterministic judge: a fact is ``correct`` when one of its value's phrases occurs in the caption,
    ``wrong`` when a phrase of another value of the same dimension occurs instead, else ``not_mentioned``.

    Hedging gets no credit: for a dimension with one true value (``SINGLE_VALUED`` dimensions whose item has
    exactly one fact of that dimension, e.g. one colour or one camera motion), a caption that names the true
    value *and* another value of the same vocabulary ("red, green or blue circles") is ``wrong``.

    Values absent from the vocabulary (OCR strings, events) are matched literally (case-insensitive); for them
    only ``correct`` / ``not_mentioned`` are possible.
    """

    def __init__(self, vocabulary: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> None:
        vocab = vocabulary if vocabulary is not None else DEFAULT_VOCABULARY
        self.patterns = {dim: {v: [re.compile(p, re.IGNORECASE) for p in pats] for v, pats in values.items()}
                         for dim, values in vocab.items()}

    def _mentions(self, caption: str, dimension: str, value: str) -> bool:
        patterns = self.patterns.get(dimension, {}).get(value)
        if patterns is None:
            patterns = [re.compile(_literal(value), re.IGNORECASE)]
        return any(p.search(caption) for p in patterns)

    def judge(self, caption: str, fact: Fact, single_valued: bool | None = None) -> Verdict:
        """The verdict on one fact. ``single_valued`` (default: the dimension is in ``SINGLE_VALUED``): the
        fact is the only true value of its dimension, so naming another value as well makes it ``wrong``."""
        if single_valued is None:
            single_valued = fact.dimension in SINGLE_VALUED
        others = [v for v in self.patterns.get(fact.dimension, {}) if v != fact.value]
        if self._mentions(caption, fact.dimension, fact.value):
            if single_valued and any(self._mentions(caption, fact.dimension, v) for v in others):
                return "wrong"  # hedged: the true value among others
            return "correct"
        if any(self._mentions(caption, fact.dimension, v) for v in others):
            return "wrong"
        return "not_mentioned"

    def __call__(self, captions: Sequence[str], facts: Sequence[Sequence[Fact]]) -> list[list[Verdict]]:
        out = []
        for caption, item_facts in zip(captions, facts, strict=True):
            per_dim = Counter(f.dimension for f in item_facts)
            out.append([self.judge(caption, f, f.dimension in SINGLE_VALUED and per_dim[f.dimension] == 1)
                        for f in item_facts])
        return out


JUDGE_PROMPT = (
    "You check a caption against one known fact.\nCaption: {caption}\n"
    "Known fact: {question} is: {value}.\n"
    "Does the caption state this fact? Answer with exactly one of: correct (the caption states it), "
    "wrong (the caption states something different about it), not mentioned (the caption does not say).\nAnswer:")


def parse_verdict(text: str) -> Verdict | None:
    """The verdict in a judge's reply (first of correct / wrong / not mentioned to appear), or None."""
    found = [(m.start(), v) for v, pat in (("not_mentioned", r"not[\s_-]*mentioned"), ("wrong", r"\bwrong\b"),
                                            ("correct", r"(?<!in)\bcorrect\b"))
             for m in [re.search(pat, text, re.IGNORECASE)] if m]
    return min(found)[1] if found else None  # type: ignore[return-value]


class LLMJudge:
    """A judge LLM: ``generate(prompts) -> replies`` (any backend's text generation), one question per fact.

    A reply that names no verdict counts as ``not_mentioned`` and is tallied in ``unparsed``; a prompt the
    generator rejects with ``CaptionInputError`` (e.g. a caption holding a reserved token) gets no reply and is
    tallied in ``rejected`` (and ``unparsed``) instead of aborting the evaluation.
    """

    def __init__(self, generate: Callable[[list[str]], list[str]] | object, batch_size: int = 16) -> None:
        self.generate = generate.generate_text if hasattr(generate, "generate_text") else generate
        self.batch_size = batch_size
        self.unparsed = 0
        self.rejected = 0

    def _replies(self, prompts: list[str]) -> list[str]:
        """The judge's replies; a batch with a prompt the judge rejects (e.g. a reference caption holding a
        reserved token) is retried one prompt at a time and each rejected prompt gets an empty reply (unparsed,
        so ``not_mentioned``), counted in ``rejected``."""
        try:
            return list(self.generate(prompts))
        except CaptionInputError:
            if len(prompts) == 1:
                self.rejected += 1
                return [""]
        return [reply for p in prompts for reply in self._replies([p])]

    def __call__(self, captions: Sequence[str], facts: Sequence[Sequence[Fact]]) -> list[list[Verdict]]:
        prompts = [JUDGE_PROMPT.format(caption=c, question=DIMENSION_QUESTIONS[f.dimension], value=f.value)
                   for c, fs in zip(captions, facts, strict=True) for f in fs]
        replies: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            replies.extend(self._replies(prompts[start:start + self.batch_size]))
        verdicts: list[Verdict] = []
        for reply in replies:
            verdict = parse_verdict(reply)
            if verdict is None:
                self.unparsed += 1
                verdict = "not_mentioned"
            verdicts.append(verdict)
        out, i = [], 0
        for fs in facts:
            out.append(verdicts[i:i + len(fs)])
            i += len(fs)
        return out


# --------------------------------------------------------------------------------------------------- report
@dataclass
class DimensionScore:
    dimension: str
    total: int = 0
    correct: int = 0
    wrong: int = 0
    not_mentioned: int = 0

    @property
    def precision(self) -> float:
        mentioned = self.correct + self.wrong
        return self.correct / mentioned if mentioned else 0.0

    @property
    def recall(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def row(self) -> dict[str, float | int | str]:
        return {"dimension": self.dimension, "facts": self.total, "correct": self.correct, "wrong": self.wrong,
                "not_mentioned": self.not_mentioned, "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "f1": round(self.f1, 4)}


@dataclass
class EvalReport:
    """Scores per dimension (only dimensions with annotated facts) and their mean F1."""

    scores: dict[str, DimensionScore] = field(default_factory=dict)
    verdicts: list[list[str]] = field(default_factory=list)

    @property
    def mean_f1(self) -> float:
        scored = [s.f1 for s in self.scores.values() if s.total]
        return sum(scored) / len(scored) if scored else 0.0

    def f1(self, dimension: str) -> float:
        return self.scores[dimension].f1

    def rows(self) -> list[dict]:
        return [self.scores[d].row() for d in DIMENSIONS if d in self.scores]

    def table(self) -> str:
        """A fixed-width text table (one row per dimension plus the mean F1)."""
        head = f"{'dimension':<16}{'facts':>6}{'correct':>8}{'wrong':>6}{'missed':>7}{'P':>7}{'R':>7}{'F1':>7}"
        lines = [head, "-" * len(head)]
        for r in self.rows():
            lines.append(f"{r['dimension']:<16}{r['facts']:>6}{r['correct']:>8}{r['wrong']:>6}{r['not_mentioned']:>7}"
                         f"{r['precision']:>7.3f}{r['recall']:>7.3f}{r['f1']:>7.3f}")
        lines.append(f"{'mean F1':<16}{'':>41}{self.mean_f1:>7.3f}")
        return "\n".join(lines)


def evaluate_captions(captions: Sequence[str], annotations: Sequence[Sequence[Fact | Mapping[str, str]]],
                      judge: Callable[[Sequence[str], Sequence[Sequence[Fact]]], list[list[Verdict]]] | None = None
                      ) -> EvalReport:
    """Judge every annotated fact of every caption and score each dimension (see the module docstring)."""
    if len(captions) != len(annotations):
        raise ValueError(f"{len(captions)} captions but {len(annotations)} annotation lists")
    facts = [as_facts(a) for a in annotations]
    judge = judge or RuleJudge()
    verdicts = judge([c or "" for c in captions], facts)
    report = EvalReport(verdicts=[list(v) for v in verdicts])
    for item_facts, item_verdicts in zip(facts, verdicts, strict=True):
        for fact, verdict in zip(item_facts, item_verdicts, strict=True):
            score = report.scores.setdefault(fact.dimension, DimensionScore(fact.dimension))
            score.total += 1
            setattr(score, verdict, getattr(score, verdict) + 1)
    return report


# ---------------------------------------------------------------------------------------------------- chart
_PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def write_chart(reports: Mapping[str, EvalReport], path: str | Path, backend: Literal["auto", "svg"] = "auto") -> Path:
    """Grouped bars of F1 per dimension, one colour per model (like the report's Fig. 4).

    ``backend="auto"`` uses matplotlib when it is installed (PNG for a ``.png`` path), else writes SVG by hand.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = [d for d in DIMENSIONS if any(d in r.scores for r in reports.values())]
    values = {name: [r.scores[d].f1 if d in r.scores else 0.0 for d in dims] for name, r in reports.items()}
    if backend == "auto":
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            backend = "svg"
    if backend == "auto":
        fig, ax = plt.subplots(figsize=(1.2 * len(dims) + 2, 4))
        width = 0.8 / max(len(values), 1)
        for k, (name, vals) in enumerate(values.items()):
            ax.bar([i + k * width for i in range(len(dims))], vals, width, label=name, color=_PALETTE[k % 6])
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(dims))], dims, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("F1")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path
    path.write_text(_svg_bars(dims, values))
    return path


def _svg_bars(dims: list[str], values: Mapping[str, list[float]]) -> str:
    group_w, left, top, plot_h, bottom = 70, 50, 30, 240, 110
    width = left + group_w * max(len(dims), 1) + 160
    height = top + plot_h + bottom
    bar_w = (group_w - 14) / max(len(values), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11">', f'<text x="{left}" y="18" font-size="13">F1 per dimension</text>']
    for tick in range(0, 11, 2):
        y = top + plot_h * (1 - tick / 10)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + group_w * len(dims)}" y2="{y:.1f}" '
                     f'stroke="#ddd"/><text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick / 10:.1f}</text>')
    for i, dim in enumerate(dims):
        x0 = left + i * group_w + 7
        for k, (name, vals) in enumerate(values.items()):
            h = plot_h * max(0.0, min(1.0, vals[i]))
            parts.append(f'<rect class="bar" data-model="{html.escape(name)}" data-dimension="{dim}" '
                         f'data-f1="{vals[i]:.4f}" x="{x0 + k * bar_w:.1f}" y="{top + plot_h - h:.1f}" '
                         f'width="{bar_w - 1:.1f}" height="{h:.1f}" fill="{_PALETTE[k % 6]}"/>')
        cx = x0 + (group_w - 14) / 2
        parts.append(f'<text x="{cx:.1f}" y="{top + plot_h + 14}" text-anchor="end" '
                     f'transform="rotate(-35 {cx:.1f} {top + plot_h + 14})">{dim}</text>')
    for k, name in enumerate(values):
        y = top + 14 * k
        lx = left + group_w * len(dims) + 16
        parts.append(f'<rect x="{lx}" y="{y}" width="10" height="10" fill="{_PALETTE[k % 6]}"/>'
                     f'<text x="{lx + 14}" y="{y + 9}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_report(reports: Mapping[str, EvalReport], out_dir: str | Path) -> dict[str, Path]:
    """``metrics.json`` (rows per model), ``table.txt`` and ``f1.svg``/``f1.png`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.json"
    metrics.write_text(json.dumps({name: {"mean_f1": r.mean_f1, "dimensions": r.rows()}
                                   for name, r in reports.items()}, indent=2) + "\n")
    table = out / "table.txt"
    table.write_text("\n\n".join(f"{name}\n{r.table()}" for name, r in reports.items()) + "\n")
    try:
        import matplotlib  # noqa: F401

        chart = write_chart(reports, out / "f1.png")
    except ImportError:
        chart = write_chart(reports, out / "f1.svg", backend="svg")
    return {"metrics": metrics, "table": table, "chart": chart}


# ------------------------------------------------------------------------------------------ end to end
def caption_and_evaluate(backend, items: Sequence, annotations: Sequence[Sequence[Fact | Mapping[str, str]]],
                         instruction: str | Sequence[str] | None = None, max_new_tokens: int = 128,
                         judge: Callable | None = None) -> tuple[EvalReport, list]:
    """Caption ``items`` with any backend (``caption(items, instruction, max_new_tokens)``) and score them.

    Items the backend could not caption count as captions that mention nothing. Returns (report, results).
    """
    results = backend.caption(items, instruction=instruction, max_new_tokens=max_new_tokens)
    return evaluate_captions([r.text or "" for r in results], annotations, judge), results


def main(argv: list[str] | None = None) -> None:
    """``python -m captioner.eval --model DIR --lake LAKE [--split eval] [--backend hf] --out DIR``."""
    import argparse

    from captioner.backends import get_backend
    from captioner.data import read_examples

    parser = argparse.ArgumentParser(description="Caption the annotated examples of a caption_sft split and score "
                                                 "them per dimension (rule judge, or --judge-model for an LLM judge).")
    parser.add_argument("--model", required=True, help="saved captioner folder")
    parser.add_argument("--lake", required=True)
    parser.add_argument("--split", default="eval")
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    parser.add_argument("--judge-model", default=None, help="captioner folder whose LLM judges (hf backend)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    examples = [e for e in read_examples(args.lake, args.split) if e.facts]
    if not examples:
        raise SystemExit(f"no annotated examples in split {args.split!r} of {args.lake}")
    backend = get_backend(args.backend, args.model)
    judge = LLMJudge(get_backend("hf", args.judge_model)) if args.judge_model else None
    report, _ = caption_and_evaluate(backend, [e.media() for e in examples], [e.facts for e in examples],
                                     [e.instruction for e in examples], args.max_new_tokens, judge)
    files = write_report({backend.model_id: report}, args.out)
    print(report.table())
    print(f"report: {files['table']}, {files['chart']}")


if __name__ == "__main__":
    main()
