"""``perf/gpu.sh --smoke``: every step runs on the CPU at tiny sizes with only torch, einops, safetensors and numpy
importable (what the lent GPU box has, less its extras), and the summary holds every figure, finite and positive.

The smoke runs in a subprocess whose interpreters load a ``sitecustomize`` that hides the modules the GPU box lacks,
the extras it has (so torch, einops and safetensors alone are proven enough) and this project's CPU-side packages:
an import of any of them fails there, so a step that pulled one in would fail and its figures would be missing.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("ray", "lance", "diffusers", "open_clip", "vllm", "curation", "captioner", "jobs", "av", "pyarrow", "cv2",
           "transformers", "timm", "torchvision", "sklearn", "ultralytics", "onnxruntime", "rapidocr_onnxruntime")
SITECUSTOMIZE = f'''
import sys

_BLOCKED = {set(BLOCKED)!r}


class _Hide:
    """Wraps a meta-path finder so the blocked top-level packages are not found: absent, as on the GPU box
    (``import`` raises ModuleNotFoundError, ``importlib.util.find_spec`` returns None)."""

    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            return None
        find = getattr(self._finder, "find_spec", None)
        return find(name, path, target) if find is not None else None

    def __getattr__(self, attribute):
        return getattr(self._finder, attribute)


sys.meta_path[:] = [_Hide(finder) for finder in sys.meta_path]
'''
SMOKE_FIGURES = {
    "matmul_tflops", "copy_gbs",
    *(f"attention.{kernel}.{op}.tflops" for kernel in ("math", "flash") for op in ("fwd", "fwd_bwd")),
    *(f"dit.sdpa.{op}.{kind}" for op in ("fwd", "train") for kind in ("s", "tflops")),
    *(f"vae.{clip}.{op}.{kind}" for clip in ("short", "long") for op in ("encode", "decode")
      for kind in ("s", "frames_per_s")),
    *(f"{step}.{key}" for step in ("train", "train_compiled")
      for key in ("step_s", "tokens_per_s", "samples_per_s", "model_tflops", "peak_mb")),
    *(f"sampling.{mode}.{kind}" for mode in ("plain", "fp8-sim", "offload", "combined", "combined-lowmem")
      for kind in ("step_s", "video_s")),
    *(f"sampling.{mode}.speedup" for mode in ("fp8-sim", "offload", "combined", "combined-lowmem")),
}


def blocked_env(tmp: Path) -> dict[str, str]:
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {**os.environ, "PYTHONPATH": str(site), "PYTHON": sys.executable}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    tmp = tmp_path_factory.mktemp("gpu_smoke")
    out = tmp / "results"
    done = subprocess.run(["bash", str(REPO / "perf" / "gpu.sh"), "--smoke", "--out", str(out)], cwd=REPO,
                          env=blocked_env(tmp), capture_output=True, text=True, timeout=420, check=False)
    return done, out


def test_blocker_makes_installed_modules_absent(tmp_path: Path) -> None:
    """Not vacuous: ray, lance, diffusers and open_clip are installed here, and a child interpreter under the
    blocker cannot import them and does not find them."""
    assert all(importlib.util.find_spec(name) is not None for name in ("ray", "lance", "diffusers", "open_clip"))
    probe = ("import importlib.util\n"
             "assert importlib.util.find_spec('ray') is None and importlib.util.find_spec('open_clip') is None\n"
             "import torch, einops, safetensors, wanmodel.models.dit\n"
             "import lance\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=blocked_env(tmp_path), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "ModuleNotFoundError: No module named 'lance'"


@pytest.mark.slow
def test_smoke_writes_every_figure(smoke: tuple[subprocess.CompletedProcess, Path]) -> None:
    """Under the blocker (only torch-side packages importable) every step runs and every figure is there."""
    done, out = smoke
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "gpu.json").read_text())
    assert summary["ok"] and summary["smoke"] and not summary["missing"]
    names = {figure["name"] for figure in summary["figures"]}
    assert names == SMOKE_FIGURES
    for figure in summary["figures"]:
        assert math.isfinite(figure["value"]) and figure["value"] > 0, figure
        if figure["ceiling"] is not None:
            assert figure["ratio"] == pytest.approx(figure["value"] / figure["ceiling"])
    rates = [figure for figure in summary["figures"]
             if figure["unit"] == "TFLOP/s" and figure["name"] != "matmul_tflops"]
    measured = summary["ceilings"]["matmul_tflops"]
    assert rates and all(figure["ceiling"] == measured for figure in rates)  # rated against this run's ceiling
    statuses = {step["step"]: step["status"] for step in summary["steps"]}
    assert statuses == {"gpu_info": "ok", "dit_sdpa": "ok", "dit_flash": "skipped", "dit_sage": "skipped",
                        "vae": "ok", "train": "ok", "sampling": "ok", "train_compiled": "ok",
                        "curation_models": "skipped"}
    for name in ("gpu_info", "dit_sdpa", "vae", "train", "sampling", "train_compiled"):  # each benchmark's own JSON
        assert json.loads((out / f"{name}.json").read_text())
    attention = json.loads((out / "gpu_info.json").read_text())["attention"]
    assert summary["device"]["sdpa_default_kernel"] == attention["default"] in ("MATH", "FLASH_ATTENTION")
    assert "error" in attention["kernels"]["EFFICIENT_ATTENTION"]  # a CUDA kernel: recorded on the CPU, not fatal
    assert "matmul_tflops" in done.stdout and "train.tokens_per_s" in done.stdout  # the table


def test_summary_reports_a_failed_step_and_a_missing_figure(tmp_path: Path) -> None:
    """Known input: one step failed and one figure came back zero -> both listed, exit status 1."""
    (tmp_path / "steps.tsv").write_text("step\tstatus\trc\tseconds\tnote\n"
                                        "gpu_info\tok\t0\t3\tlogs/gpu_info.log\n"
                                        "vae\tfailed\t1\t2\tlogs/vae.log\n"
                                        "train\tok\t0\t9\tlogs/train.log\n")
    info = {"name": "cpu", "device": "cpu", "torch": "x", "total_memory_mb": 1000.0,
            "matmul": {"tflops": 2.0}, "copy": {"gbs": 10.0}, "nominal": {"matmul_tflops": 790.0, "copy_gbs": 3350.0}}
    (tmp_path / "gpu_info.json").write_text(json.dumps(info))
    case = {"step_s": 0.5, "tokens_per_s": 256.0, "samples_per_s": 2.0, "model_tflops": 0.5, "peak_mb": 0.0}
    (tmp_path / "train.json").write_text(json.dumps({"cases": [case]}))
    done = subprocess.run([sys.executable, "-m", "perf.gpu_summary", "--dir", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    summary = json.loads((tmp_path / "gpu.json").read_text())
    assert {(lack["step"], lack["name"]) for lack in summary["missing"]} == {("vae", "vae"),
                                                                            ("train", "train.peak_mb")}
    figures = {figure["name"]: figure for figure in summary["figures"]}
    assert figures["train.model_tflops"]["ratio"] == pytest.approx(0.25)  # 0.5 of the measured 2.0
    assert figures["train.model_tflops"]["ratio_nominal"] == pytest.approx(0.5 / 790)
    assert figures["matmul_tflops"]["ratio"] == pytest.approx(2.0 / 790)
    assert figures["train.tokens_per_s"]["ceiling"] is None


def test_pack_leaves_the_summary_and_one_archive_of_the_rest(tmp_path: Path) -> None:
    """``--pack``: the folder ends with gpu.json and gpu_run.tar.gz alone (a lent box returns at most 8 files; the
    script leaves a dozen), and the archive holds every other file and log, byte for byte."""
    import tarfile

    (tmp_path / "steps.tsv").write_text("step\tstatus\trc\tseconds\tnote\ntrain\tok\t0\t9\tlogs/train.log\n")
    case = {"step_s": 0.5, "tokens_per_s": 256.0, "samples_per_s": 2.0, "model_tflops": 0.5, "peak_mb": 10.0}
    files = {"train.json": json.dumps({"cases": [case]}), "logs/train.log": "step 1\nstep 2\n",
             "logs/vae.log": "killed at its timeout\n", "steps.tsv": (tmp_path / "steps.tsv").read_text()}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    done = subprocess.run([sys.executable, "-m", "perf.gpu_summary", "--dir", str(tmp_path), "--pack"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr  # the one step that ran has all its figures
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gpu.json", "gpu_run.tar.gz"]
    with tarfile.open(tmp_path / "gpu_run.tar.gz") as tar:
        packed = {member.name: tar.extractfile(member).read().decode() for member in tar.getmembers()
                  if member.isfile()}
    assert packed == files
    summary = json.loads((tmp_path / "gpu.json").read_text())
    assert {figure["name"] for figure in summary["figures"]} >= {"train.tokens_per_s", "train.peak_mb"}
    broken = tmp_path / "broken"  # a summary that fails (no steps.tsv) still packs what is there
    (broken / "logs").mkdir(parents=True)
    (broken / "logs" / "gpu_info.log").write_text("Traceback ...\n")
    done = subprocess.run([sys.executable, "-m", "perf.gpu_summary", "--dir", str(broken), "--pack"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "steps.tsv" in done.stderr
    assert sorted(path.name for path in broken.iterdir()) == ["gpu_run.tar.gz"]

# ------------------------------------------------------------------ perf.train's timing hook and its arithmetic
def test_time_train_step_times_any_step_callable() -> None:
    """The hook the distributed trainer will be timed through: warm-up calls untimed, then the timed ones."""
    import torch

    from perf.train import time_train_step

    calls: list[int] = []

    def step() -> torch.Tensor:
        calls.append(len(calls))
        return torch.tensor(float(len(calls)))

    timing = time_train_step(step, device="cpu", warmup=2, steps=3)
    assert len(calls) == 5
    assert timing["losses"] == [3.0, 4.0, 5.0]  # only the timed steps' losses
    assert len(timing["runs_s"]) == 3 and timing["step_s"] == sorted(timing["runs_s"])[1]
    assert timing["min_step_s"] == min(timing["runs_s"]) and timing["peak_mb"] > 0


def test_throughput_counts_flops_with_perf_dit() -> None:
    """tiny at 5x32x32: latents 2x4x4, patch 1x2x2 -> 8 tokens; MFU = 3 x perf.dit's forward FLOPs / time / peak."""
    from perf.dit import forward_flops
    from perf.train import TrainCase, throughput

    case = TrainCase(config="tiny", layers=None, frames=5, height=32, width=32, batch=2)
    config = case.shape.dit_config
    figures = throughput(case, {"step_s": 0.5}, peak_tflops=100.0)
    forward = forward_flops(config, (2, 4, 4), batch=2, text_len=config.text_len)
    assert figures["tokens"] == 16 and figures["tokens_per_s"] == 32.0 and figures["samples_per_s"] == 4.0
    assert figures["mfu"] == pytest.approx(3 * forward / 0.5 / 1e12 / 100.0)
    assert figures["hfu"] == pytest.approx(figures["mfu"] * 4 / 3)  # checkpointing recomputes the forward
    plain = throughput(TrainCase(config="tiny", layers=None, frames=5, height=32, width=32, batch=2,
                                 activation_checkpointing=False), {"step_s": 0.5}, peak_tflops=100.0)
    assert plain["hfu"] == pytest.approx(plain["mfu"])


def test_summary_keeps_the_modes_a_timed_out_sampling_step_saved(tmp_path: Path) -> None:
    """Sampling killed at its timeout after two modes: those modes' figures are in the summary, and the step's
    timeout is listed as missing."""
    (tmp_path / "steps.tsv").write_text("step\tstatus\trc\tseconds\tnote\n"
                                        "sampling\ttimeout\t124\t150\tlogs/sampling.log\n")
    cases = [{"mode": "plain", "available": True, "step_s": 0.5, "video_s": 30.0, "peak_mb": 9000.0},
             {"mode": "fp8", "available": True, "step_s": 0.25, "video_s": 15.0, "speedup": 2.0, "peak_mb": 8000.0}]
    (tmp_path / "sampling.json").write_text(json.dumps({"complete": False, "cases": cases}))
    done = subprocess.run([sys.executable, "-m", "perf.gpu_summary", "--dir", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    summary = json.loads((tmp_path / "gpu.json").read_text())
    assert summary["missing"] == [{"step": "sampling", "name": "sampling",
                                   "reason": "step timeout (exit 124), see logs/sampling.log"}]
    assert {"sampling.plain.video_s", "sampling.fp8.speedup"} <= {f["name"] for f in summary["figures"]}


def test_summary_sampling_rows(tmp_path: Path) -> None:
    """perf.sampling's rows: a mode that is not installed is no figure and not missing; one whose run failed (an
    out-of-memory) is missing; plain has no speed-up figure; the peak memory of each mode is a figure."""
    (tmp_path / "steps.tsv").write_text("step\tstatus\trc\tseconds\tnote\nsampling\tok\t0\t9\tlogs/sampling.log\n")
    cases = [{"mode": "plain", "available": True, "step_s": 0.5, "video_s": 30.0, "peak_mb": 9000.0},
             {"mode": "fp8", "available": True, "step_s": 0.25, "video_s": 15.0, "speedup": 2.0, "peak_mb": 8000.0},
             {"mode": "sage", "available": False, "failed": False, "reason": "SageAttention not installed"},
             {"mode": "offload", "available": False, "failed": True, "reason": "OutOfMemoryError: CUDA"}]
    (tmp_path / "sampling.json").write_text(json.dumps({"cases": cases}))
    done = subprocess.run([sys.executable, "-m", "perf.gpu_summary", "--dir", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1  # the failed mode
    summary = json.loads((tmp_path / "gpu.json").read_text())
    assert summary["missing"] == [{"step": "sampling", "name": "sampling.offload", "reason": "OutOfMemoryError: CUDA"}]
    figures = {figure["name"]: figure for figure in summary["figures"]}
    assert set(figures) == {"sampling.plain.step_s", "sampling.plain.video_s", "sampling.plain.peak_mb",
                            "sampling.fp8.step_s", "sampling.fp8.video_s", "sampling.fp8.speedup",
                            "sampling.fp8.peak_mb"}
    assert figures["sampling.fp8.speedup"]["value"] == 2.0 and figures["sampling.fp8.speedup"]["ceiling"] is None


def test_dit_and_vae_benchmarks_keep_their_timings_when_the_memory_measurement_runs_out_of_memory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On CUDA the memory measurement builds a second model beside the timed one; its out-of-memory is recorded
    per figure and the timings already measured stay (the summary then lists only the memory figure missing)."""
    import torch

    from perf import dit, vae

    def out_of_memory(*args: object, **kwargs: object) -> dict[str, float]:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(dit, "peak_memory", out_of_memory)
    monkeypatch.setattr(vae, "peak_memory", out_of_memory)
    threads = torch.get_num_threads()
    try:
        case = dit.Case(config="tiny", layers=None, frames=5, height=32, width=32, text_tokens=8)
        result = dit.benchmark_case(case, repeat=1, reference=False, backward=True, memory=True)
        clips = vae.benchmark("tiny", short=1, long=5, size=32, repeat=1, reference=False)["clips"]
    finally:
        torch.set_num_threads(threads)
    for op in ("fwd", "train"):
        assert result[f"{op}_ours_s"] > 0 and f"{op}_ours_mb" not in result
        assert result[f"{op}_ours_mb_error"] == "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"
    for clip in clips.values():
        for op in ("encode", "decode"):
            assert clip[f"{op}_ours_s"] > 0 and clip[f"{op}_ours_mb_error"].startswith("out of memory")
    # the summary (not smoke: memory figures expected) keeps the times and names the out-of-memory as the reason
    (tmp_path / "steps.tsv").write_text("step\tstatus\trc\tseconds\tnote\n"
                                        "dit_sdpa\tok\t0\t9\tlogs/dit_sdpa.log\nvae\tok\t0\t9\tlogs/vae.log\n")
    (tmp_path / "dit_sdpa.json").write_text(json.dumps({"cases": [result]}))
    (tmp_path / "vae.json").write_text(json.dumps({"clips": clips}))
    done = subprocess.run([sys.executable, "-m", "perf.gpu_summary", "--dir", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    summary = json.loads((tmp_path / "gpu.json").read_text())
    assert {lack["name"] for lack in summary["missing"]} == {
        "dit.sdpa.fwd.peak_mb", "dit.sdpa.train.peak_mb",
        *(f"vae.{label}.{op}.peak_mb" for label in ("short", "long") for op in ("encode", "decode"))}
    assert all(lack["reason"].startswith("out of memory: CUDA out of memory") for lack in summary["missing"])
    assert {"dit.sdpa.fwd.s", "dit.sdpa.train.tflops", "vae.long.decode.s"} <= {f["name"] for f in summary["figures"]}


def test_gpu_info_writes_the_ceilings_before_the_attention_kernels() -> None:
    """A fused attention kernel that brings the process down must not take the ceilings with it: they are saved
    first. The kernels' rates follow the FlashAttention count (4 N^2 D H forward, 3.5 x that with the backward)."""
    import torch

    from perf import gpu_info

    saved: list[dict] = []
    threads = torch.get_num_threads()
    try:
        result = gpu_info.measure("cpu", smoke=True, save=lambda ceilings: saved.append(json.loads(json.dumps(ceilings))))
    finally:
        torch.set_num_threads(threads)
    assert len(saved) == 1 and "attention" not in saved[0] and saved[0]["matmul"]["tflops"] > 0
    math_kernel = result["attention"]["kernels"]["MATH"]
    forward = 4 * 256**2 * 64 * 2  # smoke shape: 2 heads x 256 tokens x 64
    assert math_kernel["fwd_tflops"] == pytest.approx(forward / math_kernel["fwd_s"] / 1e12)
    assert math_kernel["fwd_bwd_tflops"] == pytest.approx(3.5 * forward / math_kernel["fwd_bwd_s"] / 1e12)
