"""Write an official Sa2VA checkpoint folder as a native SegChat checkpoint, streaming tensor by tensor.

The output folder holds `config.json` (a `SegChatConfig`), safetensors shards with an index (floating-point tensors
narrowed to the dtype the model will be loaded with, never widened; a tied head stored once), the tokenizer files
copied byte for byte (a JSON file with an `auto_map` is rewritten without it, so nothing points at remote code) and
the Qwen image-processor config. It loads with `SegChatModel.from_pretrained` / `SegChat.from_pretrained` without
any conversion.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from model.config import SegChatConfig
from model.sa2va.convert.layout import check_layout, refusal
from model.sa2va.convert.sa2va import (IMG_CONTEXT, convert_config, convert_state_dict, detect_flavour,
                                       find_added_token_id, iter_tensors, read_shapes)

# Bump when the converted layout changes: stale cache entries are then ignored.
CONVERTER_VERSION = 2
DEFAULT_SHARD_BYTES = 2 * 1024**3
# Files copied beside the weights; any `auto_map` in the JSON ones is dropped.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "added_tokens.json",
              "special_tokens_map.json", "tokenizer.model", "chat_template.jinja", "chat_template.json",
              "preprocessor_config.json")


def native_config(src: Path) -> tuple[SegChatConfig, dict]:
    """The SegChatConfig of a Sa2VA folder (from its config.json, tensor shapes and tokenizer files), and
    `convert_config`'s output that `convert_state_dict` reads. A layout it does not know raises CheckpointError
    (see `model.sa2va.convert.layout`); nothing is written."""
    config = json.loads((src / "config.json").read_text())
    try:
        flavour = detect_flavour(config)
    except ValueError as err:
        raise refusal(src, str(err)) from None
    shapes = read_shapes(src)
    check_layout(src, flavour, shapes)
    try:
        image_token_id = find_added_token_id(src, IMG_CONTEXT) if flavour == "internvl" else None
        converted = convert_config(config, shapes, image_token_id=image_token_id)
    except KeyError as err:
        raise refusal(src, f"{err} is missing (a config field or a tensor that gives a dimension)") from None
    except ValueError as err:
        raise refusal(src, str(err)) from None
    native = SegChatConfig(family=converted["family"], vlm_config=converted["vlm_config"],
                           sam2_config=converted["sam2_config"], template=converted["template"],
                           seg_hidden_state=converted["seg_hidden_state"],
                           sam2_pixel_mode=converted["sam2_pixel_mode"])
    if native.text_hidden_size != converted["projector_hidden"] or native.prompt_dim != converted["projector_out"]:
        raise ValueError("the [SEG] projector's shapes do not match the language model and SAM2 widths")
    return native, converted


def write_shards(items: Iterable[tuple[str, torch.Tensor]], dst: Path, shard_bytes: int = DEFAULT_SHARD_BYTES) -> dict:
    """Save (key, tensor) pairs into `model-XXXXX.safetensors` shards of about `shard_bytes`, holding at most one
    shard in memory; writes `model.safetensors.index.json` and returns its weight map."""
    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}
    pointers: set[int] = set()
    names: list[str] = []
    size = total = 0

    def flush() -> None:
        nonlocal shard, size
        name = f"model-{len(names) + 1:05d}.safetensors"
        save_file(shard, dst / name, metadata={"format": "pt"})
        names.append(name)
        weight_map.update(dict.fromkeys(shard, name))
        shard, size = {}, 0
        pointers.clear()

    for key, tensor in items:
        tensor = tensor.contiguous()
        # safetensors refuses tensors sharing memory (split views, SAM2's shared Fourier matrix): copy those
        if tensor.untyped_storage().nbytes() != tensor.nbytes or tensor.data_ptr() in pointers:
            tensor = tensor.clone()
        if shard and size + tensor.nbytes > shard_bytes:
            flush()
        shard[key] = tensor
        pointers.add(tensor.data_ptr())
        size += tensor.nbytes
        total += tensor.nbytes
    if shard:
        flush()
    # rename to the usual "-of-N" names now that N is known
    final = {name: f"model-{i + 1:05d}-of-{len(names):05d}.safetensors" for i, name in enumerate(names)}
    for old, new in final.items():
        os.replace(dst / old, dst / new)
    weight_map = {k: final[v] for k, v in weight_map.items()}
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    return weight_map


def copy_side_files(src: Path, dst: Path) -> None:
    """Tokenizer and image-processor files, byte for byte; a JSON file with an `auto_map` is rewritten without it
    (the converted folder never refers to code)."""
    for name in SIDE_FILES:
        path = src / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text()) if path.suffix == ".json" else None
        if isinstance(data, dict) and "auto_map" in data:
            data.pop("auto_map")
            (dst / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        else:
            shutil.copyfile(path, dst / name)


def narrowed(items: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype | None
             ) -> Iterator[tuple[str, torch.Tensor]]:
    """Floating-point tensors cast to `dtype` where that is narrower (a bf16 model needs no fp32 copy on disk);
    None keeps every tensor's own dtype."""
    for key, tensor in items:
        if dtype is not None and tensor.is_floating_point() and tensor.element_size() > dtype.itemsize:
            tensor = tensor.to(dtype)
        yield key, tensor


def convert_checkpoint(src: str | Path, dst: str | Path, shard_bytes: int = DEFAULT_SHARD_BYTES,
                       dtype: torch.dtype | None = None) -> Path:
    """Convert the Sa2VA folder `src` into a native SegChat folder `dst` (created; must not hold a checkpoint),
    its floating-point weights narrowed to `dtype` (None: as in the source)."""
    src, dst = Path(src), Path(dst)
    if (dst / "config.json").exists():
        raise FileExistsError(f"{dst} already holds a checkpoint")
    config, converted = native_config(src)
    dst.mkdir(parents=True, exist_ok=True)
    items = convert_state_dict(iter_tensors(src), config.family, converted)
    write_shards(narrowed(items, dtype), dst, shard_bytes)
    copy_side_files(src, dst)
    config.save_pretrained(dst)  # last: a folder with config.json is complete
    return dst


def source_fingerprint(src: Path, dtype: torch.dtype | None = None) -> str:
    """Identifies a conversion cheaply: the source's resolved path, its files' sizes and mtimes, and the dtype."""
    src = src.resolve()
    digest = hashlib.sha256(f"v{CONVERTER_VERSION}\0{src}\0{dtype}".encode())
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        stat = path.stat()  # follows hub-cache symlinks to the blobs
        digest.update(f"\0{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def cache_root() -> Path:
    env = os.environ.get("SEGCHAT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "segchat" / "converted"


def cached_conversion(src: Path, root: Path | None = None, dtype: torch.dtype | None = None) -> Path:
    """The native copy of a Sa2VA folder with weights no wider than `dtype`, converted once into the cache
    (concurrent callers are safe: each converts into a private folder and the first to finish publishes it)."""
    root = root or cache_root()
    target = root / source_fingerprint(src, dtype)
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=root))
    try:
        convert_checkpoint(src, work, dtype=dtype)
        try:
            os.rename(work, target)
        except OSError:  # another process published it first
            if not (target / "config.json").exists():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work)
    return target
