"""The vLLM backend: the captioner served by vLLM (continuous batching, paged attention), same interface as the
transformers backend (``captioner.backends``: ``caption`` and ``generate_text``).

Where the engine runs
---------------------
- **In this process**, when ``vllm`` is importable (a Ray GPU actor on a cluster whose image has vLLM and our
  package): ``VllmEngine`` wraps ``vllm.LLM``. vLLM starts its engine-core and worker processes itself; our
  model reaches them through the ``vllm.general_plugins`` entry point (``captioner.vllm_plugin``).
- **In a worker process** of the vLLM environment otherwise (``.venv-vllm`` on a workstation, where the main
  stack has no vLLM): ``BridgeClient`` starts ``python -m captioner.vllm_plugin.worker`` with that
  environment's interpreter and talks to it over a pipe: one JSON line per call on stdin/stdout, the batch itself
  as an Arrow IPC file (prompt token ids, raw RGB pixels with their shapes). The worker's
  own logging goes to a log file whose tail is quoted when it fails.

What runs on the caller's side (``prepare_request``): the instruction check and collapsed prompt ids
(``CaptionProcessor.prompt_ids``), image decoding, and for videos the 3 fps sampling (at most 129 frames) and the
resize of each sampled frame to one ViT view, exactly as ``CaptionProcessor`` does them, so only the frames the
model sees travel to the engine; vLLM's multimodal processor (``captioner.vllm_plugin.model``) takes them as
pre-sampled and produces the same placeholder run and pixels as the transformers path. Greedy
decoding stops at ``<|im_end|>`` only (as ``SlowFastCaptioner.generate``), and the text is decoded here with the
same tokenizer and ``skip_special_tokens=True``, so on the same weights both backends return the same captions.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa

from captioner.backends import CaptionResult, instructions_for
from captioner.model import load_config, load_processor
from captioner.processor import (
    CaptionInputError,
    CaptionProcessor,
    ImageInput,
    MediaInput,
    VideoInput,
    decode_image,
    resize,
    sample_frame_indices,
    sample_frame_times,
)
from captioner.vllm_env import REPO_ROOT, vllm_importable, vllm_python

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- engine settings
@dataclass(frozen=True)
class EngineOptions:
    """How the vLLM engine is built (``vllm.LLM`` arguments that matter here).

    ``memory_fraction`` is vLLM's ``gpu_memory_utilization`` (on the CPU backend: the share of RAM reserved,
    mostly for the KV cache); ``None`` picks 0.9 on a GPU and 0.08 on a CPU. ``inline`` runs vLLM's engine core
    and model in the calling process (no engine/worker processes: a faster start, for CPUs and tests); ``None``
    inlines on a CPU only. ``dtype=None`` is float32 on a CPU (the transformers backend's default, so both give
    the same captions; vLLM's own "auto" would downcast to bfloat16 there) and bfloat16 on a GPU.
    """

    dtype: str | None = None
    max_model_len: int = 8192
    max_num_seqs: int = 32
    memory_fraction: float | None = None
    tensor_parallel_size: int = 1
    enforce_eager: bool = False  # True skips torch.compile (and CUDA graphs): faster start, much slower decode
    inline: bool | None = None
    seed: int = 0

    def resolved(self) -> EngineOptions:
        """The options with every ``None`` decided for this machine."""
        on_gpu = _cuda_available()
        return EngineOptions(
            dtype=self.dtype if self.dtype is not None else ("bfloat16" if on_gpu else "float32"),
            max_model_len=self.max_model_len, max_num_seqs=self.max_num_seqs,
            memory_fraction=self.memory_fraction if self.memory_fraction is not None else (0.9 if on_gpu else 0.08),
            tensor_parallel_size=self.tensor_parallel_size,
            enforce_eager=self.enforce_eager,
            inline=self.inline if self.inline is not None else not on_gpu, seed=self.seed)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is in every environment we run in
        return False


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings of one call. Greedy decoding stops at ``<|im_end|>`` only, like the transformers model."""

    max_new_tokens: int = 128
    greedy: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


# ------------------------------------------------------------------------------------------ prepared requests
@dataclass
class PreparedRequest:
    """What the engine needs for one item: the collapsed prompt and the raw RGB media the model will see.

    ``pixels`` is ``(H, W, 3)`` for an image, ``(T, S, S, 3)`` for a video (its sampled frames, each resized to
    one ViT view); ``None`` with ``media_type=None`` for text only.
    """

    prompt_ids: list[int]
    media_type: str | None = None
    pixels: np.ndarray | None = None


@dataclass
class EngineOutput:
    """Generated ids of one request (``<|im_end|>`` excluded) and its visual token count, or an error."""

    token_ids: list[int] = field(default_factory=list)
    num_visual_tokens: int = 0
    error: str | None = None


def prepare_request(processor: CaptionProcessor, item: MediaInput | None, instruction: str) -> PreparedRequest:
    """Validate and pre-process one item on the caller's side; raises ``CaptionInputError`` for bad input."""
    if item is None:
        return PreparedRequest(processor.prompt_ids(instruction, []))
    if isinstance(item, ImageInput):
        prompt = processor.prompt_ids(instruction, ["image"])
        return PreparedRequest(prompt, "image", decode_image(item.image, item.channels))
    if isinstance(item, VideoInput):
        prompt = processor.prompt_ids(instruction, ["video"])
        return PreparedRequest(prompt, "video", sampled_frames(processor, item))
    raise CaptionInputError(f"media must be ImageInput or VideoInput, got {type(item).__name__}")


def sampled_frames(processor: CaptionProcessor, item: VideoInput) -> np.ndarray:
    """The frames ``CaptionProcessor`` keeps (the same sampling), each resized to one ViT view: ``(T, S, S, 3)``.

    vLLM's processor takes them as pre-sampled (all kept, in order), and resizing a view-sized frame is the
    identity, so it computes exactly the pixels of the transformers path.
    """
    config = processor.config
    frames = item.frames
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise CaptionInputError(f"video array must be (T, H, W, 3), got shape {tuple(frames.shape)}")
    count = int(frames.shape[0]) if isinstance(frames, np.ndarray) else len(frames)
    if item.timestamps is not None:
        if len(item.timestamps) != count:
            raise CaptionInputError(f"video has {count} frames but {len(item.timestamps)} timestamps")
        indices = sample_frame_times([float(t) for t in item.timestamps], config.sample_fps, config.max_frames)
    elif item.fps is not None:
        indices = sample_frame_indices(count, float(item.fps), config.sample_fps, config.max_frames)
    else:
        raise CaptionInputError("video needs fps or timestamps")
    tile = processor.tile
    return np.stack([resize(decode_image(frames[i], item.channels), tile, tile) for i in indices])


# ---------------------------------------------------------------------------------- the engine (needs vllm)
class VllmEngine:
    """``vllm.LLM`` over a saved captioner folder; runs in a process where ``vllm`` is importable."""

    def __init__(self, model_dir: str | Path, options: EngineOptions = EngineOptions()) -> None:
        self.options = options.resolved()
        if self.options.inline:
            # Must be set before vLLM builds its engine: the engine core then runs in this process.
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        from captioner.vllm_plugin import register

        register()  # also registered by the entry point; explicit here so a missing entry point is not fatal
        config = load_config(model_dir)
        self.image_token_id, self.video_token_id = config.image_token_id, config.video_token_id
        self.stop_token_id = config.im_end_token_id
        extra: dict[str, Any] = {"distributed_executor_backend": "uni"} if self.options.inline else {}
        t0 = time.perf_counter()
        self.llm = LLM(
            str(model_dir), tokenizer=str(model_dir), dtype=self.options.dtype,
            max_model_len=self.options.max_model_len, max_num_seqs=self.options.max_num_seqs,
            gpu_memory_utilization=self.options.memory_fraction,
            tensor_parallel_size=self.options.tensor_parallel_size, enforce_eager=self.options.enforce_eager,
            seed=self.options.seed, limit_mm_per_prompt={"image": 1, "video": 1},
            generation_config="vllm",  # our decoding settings only, never a generation_config.json's
            **extra)
        self.load_s = time.perf_counter() - t0

    def _sampling_params(self, params: GenerationParams):
        from vllm import SamplingParams

        common: dict[str, Any] = {"max_tokens": params.max_new_tokens, "ignore_eos": True,
                                  "stop_token_ids": [self.stop_token_id], "detokenize": False}
        if params.greedy:
            return SamplingParams(temperature=0.0, **common)
        return SamplingParams(temperature=params.temperature, top_p=params.top_p, seed=params.seed, **common)

    def _prompt(self, request: PreparedRequest) -> dict[str, Any]:
        from captioner.vllm_plugin.model import video_item

        prompt: dict[str, Any] = {"prompt_token_ids": list(request.prompt_ids)}
        if request.media_type == "image":
            prompt["multi_modal_data"] = {"image": request.pixels}
        elif request.media_type == "video":
            prompt["multi_modal_data"] = {"video": video_item(request.pixels, presampled=True)}
        elif request.media_type is not None:
            raise CaptionInputError(f"unknown media type {request.media_type!r}")
        return prompt

    def _output(self, out: Any) -> EngineOutput:
        ids = [int(t) for t in out.outputs[0].token_ids]
        if self.stop_token_id in ids:
            ids = ids[:ids.index(self.stop_token_id)]
        prompt = out.prompt_token_ids or []
        visual = sum(1 for t in prompt if t == self.image_token_id or t == self.video_token_id)
        return EngineOutput(ids, visual)

    def generate(self, requests: Sequence[PreparedRequest], params: GenerationParams) -> list[EngineOutput]:
        """One output per request, in order. A batch that vLLM rejects is retried request by request, so one
        bad item (e.g. media the processor refuses) becomes that item's error and the others are generated."""
        if not requests:
            return []
        sampling = self._sampling_params(params)
        try:
            outs = self.llm.generate([self._prompt(r) for r in requests], sampling, use_tqdm=False)
            return [self._output(o) for o in outs]
        except Exception as batch_error:  # noqa: BLE001 - isolate the failing request(s)
            if len(requests) == 1:
                return [EngineOutput(error=f"{type(batch_error).__name__}: {batch_error}")]
        results = []
        for request in requests:
            try:
                results.append(self._output(self.llm.generate([self._prompt(request)], sampling, use_tqdm=False)[0]))
            except Exception as e:  # noqa: BLE001 - bad input is data
                results.append(EngineOutput(error=f"{type(e).__name__}: {e}"))
        return results


# ------------------------------------------------------------------------------ the bridge (no vllm needed)
REQUEST_SCHEMA = pa.schema([
    pa.field("prompt_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("media_type", pa.string()),
    pa.field("pixels", pa.large_binary()),  # raw uint8 RGB, C order
    pa.field("shape", pa.list_(pa.int32())),
])


def write_requests(path: str | Path, requests: Sequence[PreparedRequest]) -> None:
    """Write prepared requests as one Arrow IPC file (no pickles: prompt ids, raw pixel bytes, shapes)."""
    table = pa.table({
        "prompt_ids": [list(map(int, r.prompt_ids)) for r in requests],
        "media_type": [r.media_type for r in requests],
        "pixels": [None if r.pixels is None else np.ascontiguousarray(r.pixels, np.uint8).tobytes() for r in requests],
        "shape": [None if r.pixels is None else list(r.pixels.shape) for r in requests],
    }, schema=REQUEST_SCHEMA)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, REQUEST_SCHEMA) as writer:
        writer.write_table(table)


def read_requests(path: str | Path) -> list[PreparedRequest]:
    """Read a file written by ``write_requests``."""
    with pa.memory_map(str(path), "r") as source:
        table = pa.ipc.open_file(source).read_all()
    out = []
    for row in table.to_pylist():
        pixels = None
        if row["pixels"] is not None:
            pixels = np.frombuffer(row["pixels"], np.uint8).reshape(row["shape"])
        out.append(PreparedRequest(row["prompt_ids"], row["media_type"], pixels))
    return out


class WorkerError(RuntimeError):
    """The vLLM worker process failed to start or died; the message quotes its log."""


class BridgeClient:
    """A ``VllmEngine`` in a worker process of the vLLM environment, driven over a pipe (see module docs)."""

    def __init__(self, model_dir: str | Path, options: EngineOptions = EngineOptions(),
                 python: str | Path | None = None, startup_timeout_s: float = 900.0,
                 call_timeout_s: float = 3600.0) -> None:
        self.python = Path(python) if python else vllm_python()
        self.call_timeout_s = call_timeout_s
        self._dir = tempfile.TemporaryDirectory(prefix="wan-vllm-")
        self.log_path = Path(self._dir.name) / "worker.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open for the worker's lifetime, closed in close()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        spec = json.dumps({"model_dir": str(model_dir), "options": asdict(options)})
        self._proc = subprocess.Popen(
            [str(self.python), "-m", "captioner.vllm_plugin.worker", spec], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=str(REPO_ROOT))
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        self._next_id = 0
        t0 = time.perf_counter()
        ready = self._receive(startup_timeout_s, "start")
        self.start_s = time.perf_counter() - t0  # process start, imports and engine build, as the caller waits
        if ready.get("event") != "ready":
            raise WorkerError(f"vLLM worker did not start: {ready.get('error')}\n{self.log_tail()}")
        self.load_s = self.start_s
        self.engine_build_s = float(ready.get("load_s", 0.0))  # vllm.LLM(...) alone, inside the worker
        self.vllm_version = ready.get("vllm_version")

    def _read_stdout(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace"))
        self._lines.put(None)  # EOF: the worker exited

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the worker's log (vLLM's own logging)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _receive(self, timeout_s: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close(kill=True)
                raise WorkerError(f"vLLM worker gave no answer to {what} within {timeout_s:.0f}s\n{self.log_tail()}")
            try:
                line = self._lines.get(timeout=min(remaining, 5.0))
            except queue.Empty:
                continue
            if line is None:
                code = self._proc.wait()
                raise WorkerError(f"vLLM worker exited (code {code}) during {what}\n{self.log_tail()}")
            line = line.strip()
            if line:
                return json.loads(line)

    def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._proc.poll() is not None:
            raise WorkerError(f"vLLM worker is not running (code {self._proc.returncode})\n{self.log_tail()}")
        self._next_id += 1
        message = {**message, "id": self._next_id}
        assert self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(message) + "\n").encode())
        self._proc.stdin.flush()
        reply = self._receive(self.call_timeout_s, message["op"])
        if reply.get("id") != message["id"]:
            raise WorkerError(f"vLLM worker answered {reply.get('id')} to call {message['id']}")
        if reply.get("error"):
            raise WorkerError(f"vLLM worker failed: {reply['error']}")
        return reply

    def generate(self, requests: Sequence[PreparedRequest], params: GenerationParams) -> list[EngineOutput]:
        """As ``VllmEngine.generate``, in the worker."""
        if not requests:
            return []
        path = Path(self._dir.name) / f"batch-{self._next_id + 1}.arrow"
        write_requests(path, requests)
        try:
            reply = self._call({"op": "generate", "path": str(path), "params": asdict(params)})
        finally:
            path.unlink(missing_ok=True)
        return [EngineOutput(**o) for o in reply["outputs"]]

    def close(self, kill: bool = False) -> None:
        """Stop the worker (politely, then by signal) and remove its files."""
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            try:
                if not kill and proc.stdin is not None:
                    proc.stdin.write(b'{"op": "shutdown"}\n')
                    proc.stdin.flush()
                    proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if getattr(self, "_log", None) is not None and not self._log.closed:
            self._log.close()

    def __del__(self) -> None:  # a forgotten client must not leave a worker behind
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - at interpreter shutdown there is nothing left to tell
            pass


# -------------------------------------------------------------------------------------------- the backend
class VLLMBackend:
    """The captioning backend on vLLM: ``caption`` / ``generate_text`` as ``captioner.backends.hf.HFBackend``.

    ``where="auto"`` runs the engine in this process when ``vllm`` is importable, else in the vLLM environment's
    worker (``"inprocess"`` / ``"worker"`` force one); ``python`` names that environment's interpreter.
    """

    def __init__(self, model_dir: str | Path, *, where: str = "auto", options: EngineOptions | None = None,
                 python: str | Path | None = None, startup_timeout_s: float = 900.0, **option_fields: Any) -> None:
        if where not in ("auto", "inprocess", "worker"):
            raise ValueError(f"where must be 'auto', 'inprocess' or 'worker', got {where!r}")
        self.model_dir = Path(model_dir)
        self.processor = load_processor(self.model_dir)
        self.model_id = self.model_dir.name
        options = options or EngineOptions(**option_fields)
        if where == "auto":
            where = "inprocess" if vllm_importable() else "worker"
        self.where = where
        if where == "inprocess":
            self.engine: VllmEngine | BridgeClient = VllmEngine(self.model_dir, options)
        else:
            self.engine = BridgeClient(self.model_dir, options, python, startup_timeout_s)
        self.load_s = self.engine.load_s

    def _generate(self, items: Sequence[MediaInput], instruction: str | Sequence[str] | None,
                  params: GenerationParams) -> list[EngineOutput]:
        """Engine outputs per item; an item the processor rejects here gets its error without reaching vLLM."""
        outputs = [EngineOutput() for _ in items]
        prepared, where = [], []
        for i, (item, text) in enumerate(zip(items, instructions_for(items, instruction))):
            try:
                prepared.append(prepare_request(self.processor, item, text))
                where.append(i)
            except CaptionInputError as e:
                outputs[i] = EngineOutput(error=str(e))
        for i, out in zip(where, self.engine.generate(prepared, params)):
            outputs[i] = out
        return outputs

    def caption(self, items: Sequence[MediaInput], instruction: str | Sequence[str] | None = None,
                max_new_tokens: int = 128, greedy: bool = True, temperature: float = 1.0,
                top_p: float = 1.0) -> list[CaptionResult]:
        """One ``CaptionResult`` per item; items rejected by the processor or the engine carry the error."""
        params = GenerationParams(max_new_tokens, greedy, temperature, top_p)
        results = []
        for out in self._generate(items, instruction, params):
            if out.error is not None:
                results.append(CaptionResult(None, error=out.error))
            else:
                text = self.processor.tokenizer.decode(out.token_ids, skip_special_tokens=True).strip()
                results.append(CaptionResult(text, num_visual_tokens=out.num_visual_tokens,
                                             num_generated_tokens=len(out.token_ids)))
        return results

    def caption_ids(self, items: Sequence[MediaInput], instruction: str | Sequence[str] | None = None,
                    max_new_tokens: int = 128) -> list[list[int] | None]:
        """Greedy token ids per item (None for a rejected item), for exact comparisons with the reference."""
        return [None if o.error else o.token_ids
                for o in self._generate(items, instruction, GenerationParams(max_new_tokens))]

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy replies to text-only prompts (same chat format, no media)."""
        prepared = [prepare_request(self.processor, None, p) for p in prompts]
        outs = self.engine.generate(prepared, GenerationParams(max_new_tokens))
        bad = [o.error for o in outs if o.error]
        if bad:
            raise RuntimeError(f"vLLM failed on a text prompt: {bad[0]}")
        return [self.processor.tokenizer.decode(o.token_ids, skip_special_tokens=True).strip() for o in outs]

    def close(self) -> None:
        """Stop the worker process (no-op in-process: vLLM's engine shuts down with the process)."""
        if isinstance(self.engine, BridgeClient):
            self.engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
