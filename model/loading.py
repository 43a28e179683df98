"""Find a checkpoint folder (local path or hub id), choose device, dtype and quantization, and load the model and
its processor from it."""

import json
from pathlib import Path

import torch

from model.config import SegChatConfig
from model.errors import CheckpointError
from model.modeling import VISION_PREFIXES, SegChatModel
from model.processing import Limits, SegChatProcessor

WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


def resolve_source(path_or_id: str | Path, gated_hint: str = "this model") -> Path:
    """A local folder as is; otherwise a hub id, downloaded without any Python files. A gated repository the user
    has no access to gets a message on how to get it (`gated_hint` names what needs it)."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; expected a checkpoint folder or a hub id such as 'org/name'.")
    if str(path_or_id).count("/") != 1:
        raise CheckpointError(f"No folder {path} exists, and {str(path_or_id)!r} is not a hub id ('org/name').")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError

    try:
        return Path(snapshot_download(str(path_or_id), allow_patterns=WEIGHT_PATTERNS))
    except GatedRepoError as err:
        raise CheckpointError(
            f"{path_or_id!r} is gated on the Hugging Face Hub and this machine has no access to it, so "
            f"{gated_hint} is unavailable. Accept its licence at https://huggingface.co/{path_or_id} with your "
            "account, then log in (`hf auth login`) or set HF_TOKEN; or download it once and pass the path of "
            "the local folder instead."
        ) from err
    except Exception as err:  # offline, unknown repo, gated repo: all reported the same way
        raise CheckpointError(
            f"Could not download {path_or_id!r} from the Hugging Face Hub ({type(err).__name__}: {err}). "
            "Check the name and your network, or pass the path of a local checkpoint folder."
        ) from err


def read_config(folder: Path) -> dict:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} has no config.json; it is not a model checkpoint.")
    return json.loads(config_file.read_text())


def check_weights_format(folder: Path, allow_pickle: bool = False) -> None:
    """Refuse pickle-only checkpoints unless the user opted in (they can run code when unpickled)."""
    if any(folder.glob("*.safetensors")):
        return
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        if not allow_pickle:
            raise CheckpointError(
                f"{folder} holds only pickle weights (*.bin/*.pt), which can execute code when loaded. "
                "Convert them to safetensors, or pass allow_pickle=True if you trust the source."
            )
        return
    raise CheckpointError(f"{folder} has no weights (*.safetensors).")


def prepare_checkpoint(path_or_id: str | Path, allow_pickle: bool = False, dtype: torch.dtype | None = None
                       ) -> Path:
    """A native SegChat folder for a folder or hub id: as is, or, for an official Sa2VA checkpoint, its
    converted copy in the cache, weights no wider than `dtype` (converted on first use, see
    `model.sa2va.convert.checkpoint`). Any other
    checkpoint is refused with a CheckpointError that lists the supported layouts."""
    folder = resolve_source(path_or_id)
    config = read_config(folder)
    check_weights_format(folder, allow_pickle)
    if config.get("model_type") == SegChatConfig.model_type:
        return folder
    if not any(folder.glob("*.safetensors")):
        raise CheckpointError(f"{folder} is a Sa2VA checkpoint without safetensors weights; the converter reads "
                              "safetensors only.")
    from model.sa2va.convert.checkpoint import cached_conversion

    return cached_conversion(folder, dtype=dtype)


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, str):
        try:
            return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                    "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}[dtype]
        except KeyError:
            raise ValueError(f"Unknown dtype {dtype!r}; use bf16, fp16 or fp32.") from None
    return dtype


# Module-name prefixes never quantized: the mask side, the vision side and the output head.
QUANTIZATION_SKIP = ["sam2", "projector", "vlm.lm_head", *VISION_PREFIXES]


def quantization_config(kind: str | None, compute_dtype: torch.dtype):
    """bitsandbytes settings for the language model only; None for full precision."""
    if kind in (None, "none"):
        return None
    if kind not in ("4bit", "8bit"):
        raise ValueError(f"quantization must be None, '4bit' or '8bit', got {kind!r}.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise CheckpointError(
            f"{kind} quantization needs bitsandbytes: pip install bitsandbytes (or load without quantization)."
        ) from None
    from transformers import BitsAndBytesConfig

    if kind == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                                  bnb_4bit_use_double_quant=True, llm_int8_skip_modules=QUANTIZATION_SKIP)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=QUANTIZATION_SKIP)


def load_model_and_processor(path_or_id: str | Path, device: str | torch.device | None = None,
                             dtype: str | torch.dtype | None = None, quantization: str | None = None,
                             allow_pickle: bool = False,
                             limits: Limits | None = None) -> tuple[SegChatModel, SegChatProcessor]:
    """A checkpoint's model and processor (see `SegChat.from_pretrained` for the arguments); failures raise
    `CheckpointError`."""
    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    folder = prepare_checkpoint(path_or_id, allow_pickle, dtype)
    quant = quantization_config(quantization, dtype)
    try:
        model = SegChatModel.from_pretrained(folder, dtype=dtype, device_map=str(device), quantization_config=quant,
                                             use_safetensors=None if allow_pickle else True)
        processor = SegChatProcessor.from_pretrained(folder, model.config, limits)
    except CheckpointError:
        raise
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path_or_id}: the checkpoint could not be loaded ({type(err).__name__}: {err})."
                              ) from err
    return model, processor
