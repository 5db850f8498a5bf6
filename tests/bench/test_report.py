"""Wan-Bench reports on two runs that differ in a planted way (run ``dim`` scores dark static videos, run ``lit``
bright flickering ones): ``wan bench compare`` puts them side by side with the right means and totals, the HTML
page holds Table 2 (dimensions grouped, one column per run), the radar (one polygon per run, at the right radii)
and the thumbnails with their scores and evidence, and the JSON export has VBench's shape."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from tests.bench.toy_dims import flicker_video, gray_video, write_folder

DIMS = ["toy_brightness", "toy_motion"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    from bench.job import BenchJobConfig, run_bench

    tmp = tmp_path_factory.mktemp("report")
    runs = {"dim": {"a-0": gray_video(40), "b-0": gray_video(60)},
            "lit": {"a-0": flicker_video(), "b-0": gray_video(220)}}
    for run, videos in runs.items():
        folder = write_folder(tmp / run, videos)
        run_bench(BenchJobConfig(lake=str(tmp / "lake"), run=run, dimensions=DIMS, execution="local",
                                 dimension_modules=["tests.bench.toy_dims"], videos_dir=str(folder)))
    return str(tmp / "lake")


def test_compare_prints_both_runs_side_by_side(lake: str, capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.bench import main

    assert main(["compare", "--lake", lake, "dim", "lit"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["dimension", "dim", "lit"]
    bright = next(line for line in lines if "toy_brightness" in line).split()
    assert [float(v.rstrip("%")) for v in bright[1:]] == pytest.approx([100 * 50 / 255, 100 * (127.5 + 220) / 2 / 255],
                                                                     abs=0.8)  # mp4 moves a grey level a little
    motion = next(line for line in lines if "toy_motion" in line).split()
    assert [float(v.rstrip("%")) for v in motion[1:]] == pytest.approx([0.0, 50.0], abs=1.0)
    assert lines.index("[dynamic_quality]") < lines.index("[image_quality]")
    assert main(["compare", "--lake", lake, "dim", "nope"]) == 2


def test_report_table_radar_thumbnails_and_vbench_json(lake: str, tmp_path: Path) -> None:
    from bench.report import write_report

    paths = write_report(lake, ["dim", "lit"], tmp_path / "out")
    page = Path(paths["html"]).read_text()
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from a network
    table = page[page.index("<table class='t2'>"):page.index("</table>", page.index("<table class='t2'>"))]
    assert re.search(r"<th>Dimension</th><th>dim</th><th>lit</th>", table)
    assert table.index("Dynamic quality") < table.index("toy_motion") < table.index("Image quality") \
        < table.index("toy_brightness") < table.index("Weighted total")
    polygons = re.findall(r"<polygon class='run' data-run='(\w+)' points='([^']+)'", page)
    assert [run for run, _ in polygons] == ["dim", "lit"]
    size, inner = 420, 420 / 2 - 40  # the radar's size and its outer ring's radius (value 1)
    for run, points in polygons:  # dimensions sorted by group: toy_motion first (straight up), then brightness
        (_, my), (_, by) = [tuple(map(float, p.split(","))) for p in points.split()]
        want = {"dim": (0.0, 50 / 255), "lit": (0.5, (127.5 + 220) / 2 / 255)}[run]
        assert (size / 2 - my) / inner == pytest.approx(want[0], abs=0.01)
        assert (by - size / 2) / inner == pytest.approx(want[1], abs=0.01)
    thumbs = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(thumbs) == 4 and all(base64.b64decode(t)[:8] == b"\x89PNG\r\n\x1a\n" for t in thumbs)
    assert page.count("class='card'") == 4
    first = page[page.index("class='card'"):page.index("<details>", page.index("class='card'"))]
    assert "Q: How bright is the video?<br>A: brightness of a" in first  # the judge's answers, shown on the card
    export = json.loads(Path(tmp_path / "out" / "lit_eval_results.json").read_text())
    assert sorted(export) == DIMS
    mean, videos = export["toy_motion"]
    assert mean == pytest.approx(0.5, abs=0.01) and [v["video_path"] for v in videos] == ["a-0.mp4", "b-0.mp4"]
    assert set(videos[0]) >= {"video_path", "video_results", "prompt", "evidence"} and videos[0]["prompt"] == "a"
    summary = json.loads(Path(paths["json"]).read_text())
    assert [r["run"] for r in summary["runs"]] == ["dim", "lit"]
    assert summary["runs"][1]["total"] > summary["runs"][0]["total"]
