"""Checkpoint plumbing shared by the VAE and DiT adapters; each adapter keeps only its key table and configs.

- safetensors I/O: ``read_state_dict`` (safetensors, or a torch ``.pth``/``.pt``/``.bin`` state dict; one file or
  several shards merged, a key in two shards is an error; ``lazy=True`` gives ``LazyTensor``s, read only when
  placed), ``write_weights`` (one file, or diffusers-style shards ``<stem>-0000i-of-0000n.safetensors`` plus
  ``<stem>.safetensors.index.json``), ``weight_files`` (the files of a stem in a folder, through its index json
  when there is one);
- config tagging: ``write_config`` / ``read_config`` (our JSON config beside the weights, tagged with the class or
  model type that says which layout the folder holds);
- key errors: ``rename_keys`` (a key table applied to a state dict, every unknown key listed), ``invert_keys``
  (the reverse table derived from the forward one), ``check_state_dict`` (missing, unexpected, misshapen keys);
- meta-device loading: ``load_weights`` puts the tensors into a model built on the meta device, one tensor at a
  time, reading, casting and moving each on its own, so a large checkpoint never sits whole in host memory nor
  twice on the device.

Imports only torch and safetensors (the model core runs on a bare GPU box).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

__all__ = [
    "CONFIG_FILE",
    "LazyTensor",
    "UnknownKeyError",
    "check_state_dict",
    "cpu_state_dict",
    "first_keys",
    "invert_keys",
    "load_weights",
    "read_config",
    "read_state_dict",
    "rename_keys",
    "require_weight_files",
    "weight_files",
    "write_config",
    "write_weights",
]

CONFIG_FILE = "config.json"
SAFETENSORS_METADATA = {"format": "pt"}  # what diffusers and transformers write; their readers expect it
TENSOR_ALIGNMENT = 64  # bytes; what torch's CPU allocator gives every tensor it allocates


class UnknownKeyError(KeyError):
    """A key that a layout's key table does not know."""


# ------------------------------------------------------------------------------------------------ key errors
def first_keys(keys: Iterable[str], count: int = 5) -> str:
    """The first ``count`` keys joined, with how many more there are."""
    keys = list(keys)
    shown = ", ".join(keys[:count])
    return shown + (f", ... ({len(keys) - count} more)" if len(keys) > count else "")


def rename_keys(state_dict: Mapping[str, torch.Tensor], rename: Callable[[str], str], layout: str
                ) -> dict[str, torch.Tensor]:
    """``state_dict`` with every key passed through ``rename`` (same tensors). Keys ``rename`` rejects with
    ``UnknownKeyError`` are collected and raised as one ValueError naming (a few of) them."""
    renamed, unknown = {}, []
    for key, value in state_dict.items():
        try:
            renamed[rename(key)] = value
        except UnknownKeyError:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} key(s) not in the {layout} layout: {first_keys(unknown)}")
    return renamed


def invert_keys(keys: Iterable[str], rename: Callable[[str], str]) -> Callable[[str], str]:
    """The reverse of ``rename`` over ``keys`` (every key of the source layout): a function from a renamed key
    back to its source key that raises ``UnknownKeyError`` for any other key. ValueError if ``rename`` sends two
    keys to one name (then it has no inverse)."""
    table: dict[str, str] = {}
    for key in keys:
        target = rename(key)
        if target in table:
            raise ValueError(f"key table is not one-to-one: {table[target]} and {key} both map to {target}")
        table[target] = key

    def inverse(key: str) -> str:
        try:
            return table[key]
        except KeyError:
            raise UnknownKeyError(key) from None

    return inverse


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """ValueError naming (a few of) the missing and unexpected keys and the shape mismatches, if any."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {first_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {first_keys(unexpected)}")
    mismatched = [f"{key} {tuple(state_dict[key].shape)} vs {tuple(value.shape)}"
                  for key, value in expected.items() if key in state_dict and state_dict[key].shape != value.shape]
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es) (checkpoint vs model): {first_keys(mismatched)}")
    if problems:
        config = getattr(model, "config", None)
        raise ValueError(f"{what} checkpoint does not match the model ({config}): " + "; ".join(problems))


# ------------------------------------------------------------------------------------------------- reading
class LazyTensor:
    """One tensor of a safetensors file: its shape now, its data only when ``load`` is called. Key tables and
    checks move and inspect these like tensors, so a checkpoint is read one tensor at a time as it is placed."""

    def __init__(self, file: Path, key: str, shape: Iterable[int]) -> None:
        self.file, self.key, self.shape = file, key, torch.Size(shape)

    def load(self, device: str | torch.device = "cpu") -> torch.Tensor:
        with safe_open(str(self.file), framework="pt", device=str(device)) as handle:
            return handle.get_tensor(self.key)

    def __repr__(self) -> str:
        return f"LazyTensor({self.file.name}:{self.key}, shape={tuple(self.shape)})"


def _read_one(file: Path, device: str | torch.device, lazy: bool) -> dict[str, torch.Tensor | LazyTensor]:
    if file.suffix == ".safetensors":
        if not lazy:
            return load_file(str(file), device=str(device))
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            keys = list(handle.keys())  # a safe_open handle, not a dict
            return {key: LazyTensor(file, key, handle.get_slice(key).get_shape()) for key in keys}
    loaded = torch.load(file, map_location=device, weights_only=True)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise TypeError(f"{file} does not hold a state dict (got {type(loaded).__name__})")
    return loaded


def read_state_dict(files: Iterable[str | Path], *, what: str = "model", device: str | torch.device = "cpu",
                    lazy: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of one or more files (safetensors, or a torch state dict in ``.pth``/``.pt``/``.bin``, also
    one wrapped as ``{"state_dict": ...}``) as one dict; a missing file or a key in two files is a clear error.
    ``lazy``: safetensors entries are ``LazyTensor``s, read by ``load_weights`` one at a time (torch files, a
    pickle format, are read whole)."""
    state_dict: dict[str, torch.Tensor] = {}
    for file in map(Path, files):
        if not file.is_file():
            raise FileNotFoundError(f"no {what} weights at {file}")
        part = _read_one(file, device, lazy)
        duplicated = sorted(set(part) & set(state_dict))
        if duplicated:
            raise ValueError(f"key(s) in more than one shard ({file}): {first_keys(duplicated)}")
        state_dict.update(part)
    return state_dict


def weight_files(directory: Path, stem: str) -> list[Path] | None:
    """The safetensors files of ``stem`` in ``directory``: the shards its index json names, else the one file,
    else None."""
    index = directory / f"{stem}.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no weight_map")
        files = [directory / name for name in dict.fromkeys(weight_map.values())]
        missing = [str(file) for file in files if not file.is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names shard(s) that do not exist: {first_keys(missing)}")
        return files
    single = directory / f"{stem}.safetensors"
    return [single] if single.is_file() else None


def require_weight_files(directory: Path, stem: str, what: str) -> list[Path]:
    """``weight_files``, or a FileNotFoundError that names both files it looked for."""
    files = weight_files(directory, stem)
    if files is None:
        raise FileNotFoundError(f"no {what} weights in {directory}: expected {directory / stem}.safetensors or "
                                f"{stem}.safetensors.index.json")
    return files


def read_config(directory: Path, what: str) -> dict[str, Any]:
    """The JSON config of a checkpoint folder; FileNotFoundError naming the path it expected."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {what} config at {path} (expected {CONFIG_FILE} in the checkpoint folder)")
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise TypeError(f"{path} does not hold a JSON object")
    return data


# ------------------------------------------------------------------------------------------------- writing
def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's tensors, detached, on the CPU and contiguous (as safetensors wants them)."""
    return {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}


def write_config(directory: Path, config: Mapping[str, Any]) -> Path:
    """Write ``config`` (already tagged with its layout's class or model type) as the folder's config.json."""
    path = directory / CONFIG_FILE
    path.write_text(json.dumps(dict(config), indent=2) + "\n")
    return path


def _shards(state_dict: Mapping[str, torch.Tensor], max_shard_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    """Keys in order, a new shard whenever the next tensor would push the current one over ``max_shard_bytes``."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in state_dict.items():
        nbytes = value.numel() * value.element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    return shards


def write_weights(state_dict: Mapping[str, torch.Tensor], directory: Path, stem: str,
                  max_shard_bytes: int | None = None) -> list[Path]:
    """Write ``<stem>.safetensors``, or, when the tensors exceed ``max_shard_bytes``, shards named as diffusers
    and transformers name them plus ``<stem>.safetensors.index.json`` (weight_map and total_size)."""
    shards = _shards(state_dict, max_shard_bytes)
    if len(shards) == 1:
        file = directory / f"{stem}.safetensors"
        save_file(shards[0], file, metadata=SAFETENSORS_METADATA)
        return [file]
    files, weight_map = [], {}
    for number, shard in enumerate(shards, start=1):
        name = f"{stem}-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, directory / name, metadata=SAFETENSORS_METADATA)
        weight_map.update(dict.fromkeys(shard, name))
        files.append(directory / name)
    total = sum(value.numel() * value.element_size() for value in state_dict.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return files


# ---------------------------------------------------------------------------------------- meta-device load
def load_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor | LazyTensor], *, what: str,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 keep_fp32: Iterable[str] = ()) -> torch.nn.Module:
    """Give ``model`` (built on the meta device) the checkpoint's tensors and return it in eval mode on ``device``.

    Keys are checked first (``check_state_dict``). Then one tensor at a time is popped from ``state_dict`` (read
    from its file if it is a ``LazyTensor``), cast to ``dtype`` when it is floating point (``None`` keeps the
    stored dtype; keys containing one of ``keep_fp32`` stay float32), moved to ``device`` and copied to aligned
    memory if it is not. So a checkpoint read lazily is never whole in host memory, and a bf16 load of an fp32
    checkpoint never holds two full copies on the device. ``state_dict``'s entries are replaced by the placed
    tensors."""
    check_state_dict(model, state_dict, what)
    keep_fp32 = tuple(keep_fp32)
    for key in list(state_dict):
        value = state_dict.pop(key)
        if isinstance(value, LazyTensor):
            value = value.load()
        if dtype is not None and value.is_floating_point():
            value = value.to(torch.float32 if any(part in key for part in keep_fp32) else dtype)
        value = value.to(device)
        if value.data_ptr() % TENSOR_ALIGNMENT:
            # a view at an odd offset of the file's buffer: vectorised CPU kernels take another path on unaligned
            # data and round differently, so the loaded model would not compute exactly what the saved one did
            value = value.clone()
        state_dict[key] = value
        del value
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.to(device).eval()
