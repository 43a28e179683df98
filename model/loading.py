"""Find a checkpoint folder (local path or hub id), check its files, choose device, dtype and quantization, and load
the model and its processor from it.

Every failure is a `CheckpointError` whose message names the folder or file: the files are checked before
anything is loaded (JSON that parses, safetensors whose headers cover their files, no reference to custom code),
and what the loaders still raise is reported the same way. Checkpoint code is never run.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from model.agent.plain import PlainVLM, is_plain_vlm, plain_config
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


# JSON files a loader may read; in the folder actually loaded none may point at code (`auto_map`).
CONFIG_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                "video_preprocessor_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.json",
                "model.safetensors.index.json")
# What a loader raises for a damaged file.
LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, SafetensorError)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is damaged: it is not valid JSON ({err}). Download or copy it again."
                              ) from None


def read_config(folder: Path) -> dict:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} has no config.json; it is not a model checkpoint.")
    config = _read_json(config_file)
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file} is not a model configuration (a JSON object).")
    return config


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files the checkpoint uses: those its index names (each must exist), else all."""
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return sorted(folder.glob("*.safetensors"))
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index} has no weight_map; the index is damaged.")
    files = [folder / name for name in sorted(set(map(str, weight_map.values())))]
    for path in files:
        if path.parent != folder or not path.is_file():
            raise CheckpointError(f"{index} names {path.name}, which is missing from {folder}.")
    return files


def check_files(folder: Path) -> None:
    """Refuse a folder whose JSON files do not parse or whose safetensors files are damaged or cut short (their
    headers must describe exactly the bytes present), naming the file, before any loader reads them."""
    for name in CONFIG_FILES:
        if (folder / name).is_file():
            _read_json(folder / name)
    for path in _weight_files(folder):
        try:
            with safe_open(path, "pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path} is damaged or incomplete ({err}); download or copy it again."
                                  ) from None


def refuse_custom_code(folder: Path) -> None:
    """SegChat loads standard classes only and never runs a checkpoint's code: a file naming code is refused."""
    for name in CONFIG_FILES:
        path = folder / name
        if path.is_file() and isinstance(data := _read_json(path), dict) and "auto_map" in data:
            raise CheckpointError(
                f"{path} refers to custom code (auto_map), and SegChat never runs a checkpoint's code. Remove the "
                "auto_map entry if the checkpoint uses standard classes, or convert the checkpoint.")


@contextmanager
def reporting(what: str) -> Iterator[None]:
    """Turn what a loader raises for a damaged checkpoint into a `CheckpointError` about `what`."""
    try:
        yield
    except LOAD_ERRORS as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{what} could not be loaded ({type(err).__name__}: {detail}).") from err


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
    check_files(folder)
    if config.get("model_type") == SegChatConfig.model_type:
        refuse_custom_code(folder)
        return folder
    if not any(folder.glob("*.safetensors")):
        raise CheckpointError(f"{folder} is a Sa2VA checkpoint without safetensors weights; the converter reads "
                              "safetensors only.")
    from model.sa2va.convert.checkpoint import cached_conversion

    with reporting(f"The Sa2VA checkpoint {folder} (converting it)"):
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


# Module-name prefixes never quantized: the mask side, the vision side and the output head (in a SegChat model,
# and in a plain VLM, whose modules are not under `vlm.`).
QUANTIZATION_SKIP = ["sam2", "projector", "vlm.lm_head", *VISION_PREFIXES]
PLAIN_QUANTIZATION_SKIP = ["lm_head", *(prefix.removeprefix("vlm.") for prefix in VISION_PREFIXES)]


def quantization_config(kind: str | None, compute_dtype: torch.dtype, skip: list[str] = QUANTIZATION_SKIP):
    """bitsandbytes settings for the language model only (`skip`: the module prefixes left alone); None for full
    precision."""
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
                                  bnb_4bit_use_double_quant=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def load_model_and_processor(path_or_id: str | Path, device: str | torch.device | None = None,
                             dtype: str | torch.dtype | None = None, quantization: str | None = None,
                             allow_pickle: bool = False,
                             limits: Limits | None = None) -> tuple[SegChatModel | PlainVLM, SegChatProcessor]:
    """A checkpoint's model and processor (see `SegChat.from_pretrained` for the arguments): a SegChat or Sa2VA
    checkpoint, or a plain native VLM (`PlainVLM`, for agent mode); failures raise `CheckpointError`."""
    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    folder = resolve_source(path_or_id)
    if is_plain_vlm(read_config(folder)):
        quant = quantization_config(quantization, dtype, PLAIN_QUANTIZATION_SKIP)
        return _load_plain(folder, device, dtype, quant, allow_pickle, limits)
    quant = quantization_config(quantization, dtype)
    folder = prepare_checkpoint(folder, allow_pickle, dtype)
    with reporting(f"The model in {folder}"):
        model = SegChatModel.from_pretrained(folder, dtype=dtype, device_map=str(device), quantization_config=quant,
                                             use_safetensors=None if allow_pickle else True,
                                             trust_remote_code=False)
    with reporting(f"The tokenizer or image processor in {folder}"):
        processor = SegChatProcessor.from_pretrained(folder, model.config, limits)
    return model, processor


def _load_plain(folder: Path, device: torch.device, dtype: torch.dtype, quant, allow_pickle: bool,
                limits: Limits | None) -> tuple[PlainVLM, SegChatProcessor]:
    """A native instruct VLM (Qwen2.5-VL, Qwen3-VL, InternVL in transformers' layout) and its processor."""
    from transformers import AutoModelForImageTextToText

    check_weights_format(folder, allow_pickle)
    check_files(folder)
    refuse_custom_code(folder)
    with reporting(f"The vision-language model in {folder}"):
        config = plain_config(folder)
        vlm = AutoModelForImageTextToText.from_pretrained(
            folder, dtype=dtype, device_map=str(device), quantization_config=quant,
            use_safetensors=None if allow_pickle else True, trust_remote_code=False)
    with reporting(f"The tokenizer or image processor in {folder}"):
        processor = SegChatProcessor.from_pretrained(folder, config, limits)
    return PlainVLM(vlm, config), processor
