"""Which parameters train: LoRA (or QLoRA) on the language model + the [SEG] rows, or a full fine-tune.

Always trainable: the [SEG] projector and the SAM2 mask decoder. Always frozen: the SAM2 prompt encoder. The
vision side (the VLM's vision tower and SAM2's image encoder) trains only in full mode with `train_vision`, for
models trained from random initialisation (the proof-of-learning / demo model).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from torch import nn

from model.modeling import VISION_PREFIXES, SegChatModel

MODES = ("lora", "full")
# Linear layers of the decoder blocks only: the vision tower has its own attention / MLP names under `model.visual`.
LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
ALWAYS_TRAINED = ("projector.", "sam2.mask_decoder.")
# In LoRA mode peft trains a copy of the mask decoder beside the frozen original (`modules_to_save`), and
# `merge_and_unload` puts the trained copy in its place. Not the projector: peft matches these names by suffix, and
# "projector" would also catch InternVL's vision projector (`vlm.model.multi_modal_projector`).
LORA_MODULES_TO_SAVE = ["sam2.mask_decoder"]


@dataclass(frozen=True)
class FinetuneConfig:
    mode: str = field(default="lora", metadata={"help": "LoRA on the language model, or a full fine-tune",
                                                "choices": MODES})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on LoRA's input"})
    train_vision: bool = field(default=False, metadata={
        "help": "full mode: also train the VLM vision tower and the SAM2 image encoder"})

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"fine-tuning mode must be one of {MODES}, got {self.mode!r}")
        if self.train_vision and self.mode != "full":
            raise ValueError("train_vision needs mode='full'")

    def to_dict(self) -> dict:
        return asdict(self)


def apply_finetuning(model: SegChatModel, seg_token_id: int, config: FinetuneConfig,
                     quantized: bool = False) -> PeftModel | None:
    """Set `requires_grad` (and inject LoRA in place) on `model`; returns the PEFT wrapper in LoRA mode.

    In LoRA mode the [SEG] rows of the input embedding and of the (untied) output head train as extra tokens,
    so the model learns both what [SEG] means and when to emit it, and the mask decoder trains as a peft
    `modules_to_save` copy.
    """
    model.requires_grad_(False)
    wrapper = None
    if config.mode == "lora":
        if quantized:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        tokens = {"embed_tokens": [seg_token_id]}
        if not model.config.vlm_config.get_text_config().tie_word_embeddings:
            tokens["lm_head"] = [seg_token_id]
        wrapper = get_peft_model(model, LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=LORA_TARGETS, trainable_token_indices=tokens, modules_to_save=LORA_MODULES_TO_SAVE))
        trained = ("projector.",)  # the mask decoder's copy trains already
    else:
        for name, param in model.vlm.named_parameters():
            param.requires_grad_(config.train_vision or not f"vlm.{name}".startswith(VISION_PREFIXES))
        trained = ALWAYS_TRAINED + (("sam2.vision_encoder.",) if config.train_vision else ())
    for name, param in model.named_parameters():
        if name.startswith(trained):
            param.requires_grad_(True)
    return wrapper


def trainable_names(model: nn.Module) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]
