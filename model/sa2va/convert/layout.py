"""Recognise a Sa2VA checkpoint before converting it: its flavour, its grounding encoder and its key families.

A folder the converter does not know is refused with one `CheckpointError` that names the folder, what was found
and which layouts are supported, before any weight is read or written.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from model.errors import CheckpointError

SUPPORTED = (
    "Supported: Sa2VA checkpoints with a SAM2 grounding encoder, in the InternVL flavour (InternViT with a Qwen2, "
    "InternLM2, Phi-3 or Llama language model: Sa2VA-1B/4B/8B/26B, Sa2VA-InternVL3-2B/8B/14B), the Qwen2.5-VL "
    "flavour (Sa2VA-Qwen2.5-VL-3B/7B) and the Qwen3-VL flavour (Sa2VA-Qwen3-VL-2B/4B), or a folder written by "
    "SegChat (model_type 'segchat')."
)

SAM2 = "grounding_encoder.sam2_model"
PROJECTOR = "text_hidden_fcs"

# Key families (prefixes) each flavour must have, and the ones it may have.
_REQUIRED = {
    "internvl": {"vision_model", "mlp1", "language_model.model"},
    "qwen2_5_vl": {"model.model"},
    "qwen3_vl": {"model.model"},
}
_OPTIONAL = {
    "internvl": {"language_model.lm_head", "language_model.output"},
    "qwen2_5_vl": {"model.lm_head", "model.visual"},
    "qwen3_vl": {"model.lm_head", "model.visual"},
}
_SAM2_REQUIRED = {"image_encoder", "sam_prompt_encoder", "sam_mask_decoder", "memory_attention", "memory_encoder",
                  "maskmem_tpos_enc"}
_SAM2_OPTIONAL = {"mask_downsample", "no_mem_embed", "no_mem_pos_enc", "no_obj_ptr", "obj_ptr_proj",
                  "obj_ptr_tpos_proj", "no_obj_embed_spatial"}


def key_family(key: str) -> str:
    """The prefix that names what a tensor belongs to: `vision_model`, `language_model.model`,
    `grounding_encoder.sam2_model.image_encoder`, ..."""
    parts = key.split(".")
    if parts[0] == "grounding_encoder":
        return ".".join(parts[:3] if parts[1:2] == ["sam2_model"] else parts[:2])
    if parts[0] in ("model", "language_model") and len(parts) > 2:
        return ".".join(parts[:2])
    return parts[0]


def _listing(families: Counter, names: set[str]) -> str:
    return ", ".join(f"`{name}.*` ({families[name]} tensors)" if families[name] else f"`{name}.*`"
                     for name in sorted(names))


def refusal(src: Path, problem: str) -> CheckpointError:
    """The one error for a checkpoint the converter cannot handle; `problem` says what was found."""
    return CheckpointError(f"{src} is not a checkpoint SegChat can convert: {problem}. {SUPPORTED}")


def check_layout(src: Path, flavour: str, shapes: dict[str, tuple]) -> None:
    """Refuse (CheckpointError) a Sa2VA checkpoint of `flavour` whose tensors are not exactly the known families:
    an unknown grounding encoder, a missing part, or tensors the converter would not know where to put."""
    families = Counter(key_family(k) for k in shapes)
    grounding = {f for f in families if f.startswith("grounding_encoder.") and not f.startswith(SAM2 + ".")}
    if grounding:
        raise refusal(src, f"its grounding encoder is not SAM2 (found {_listing(families, grounding)}; the SAM 3-based "
                           "Sa2VA variant is not supported)")
    sam2 = {f"{SAM2}.{name}" for name in _SAM2_REQUIRED}
    required = _REQUIRED[flavour] | sam2 | {PROJECTOR}
    known = required | _OPTIONAL[flavour] | {f"{SAM2}.{name}" for name in _SAM2_OPTIONAL}
    missing = required - families.keys()
    unexpected = families.keys() - known
    if missing or unexpected:
        found = []
        if missing:
            found.append(f"it lacks {_listing(families, missing)}")
        if unexpected:
            found.append(f"it has tensors the {flavour} flavour does not have: {_listing(families, unexpected)}")
        raise refusal(src, " and ".join(found))
