"""Configuration of a SegChat checkpoint: a vision-language model, SAM2, and how they are wired."""

from transformers import AutoConfig, PreTrainedConfig, Sam2VideoConfig
from transformers.configuration_utils import SubConfigSpec

FAMILIES = ("internvl", "qwen2_5_vl", "qwen3_vl")
SEG_HIDDEN_STATES = ("final_norm", "last_layer")


class SegChatConfig(PreTrainedConfig):
    """Composite config: `vlm_config` (a native transformers VLM), `sam2_config` (SAM2 video) and the glue.

    `seg_hidden_state` says where the `[SEG]` hidden state is read: after the final norm ("final_norm", most
    families) or at the last decoder layer's output before it ("last_layer", Sa2VA's Qwen3-VL checkpoints).
    `template` names a chat layout in `prompts/templates.json`; `sam2_pixel_mode` names the rounding of SAM2's
    input normalisation (see `model.preprocess.sam2_pixels`).
    """

    model_type = "segchat"
    sub_configs_defaults = {
        "vlm_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2_5_vl"),
        "sam2_config": Sam2VideoConfig,
    }

    vlm_config: dict | PreTrainedConfig | None = None
    sam2_config: dict | PreTrainedConfig | None = None
    family: str = "qwen2_5_vl"
    seg_token: str | None = "[SEG]"  # None: a plain VLM (agent mode, `model.agent.plain`)
    seg_hidden_state: str = "final_norm"
    template: str = "qwen_chat"
    sam2_pixel_mode: str | dict = "fp32"  # one mode, or {"image": ..., "video": ...} (Sa2VA's Qwen flavours)
    max_tiles: int = 12
    qwen_min_pixels: int = 512 * 28 * 28
    qwen_max_pixels: int = 2048 * 28 * 28
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.family not in FAMILIES:
            raise ValueError(f"Unknown family {self.family!r}; expected one of {FAMILIES}.")
        if self.seg_hidden_state not in SEG_HIDDEN_STATES:
            raise ValueError(f"seg_hidden_state must be one of {SEG_HIDDEN_STATES}, got {self.seg_hidden_state!r}.")

    @property
    def text_hidden_size(self) -> int:
        return self.vlm_config.get_text_config().hidden_size

    def pixel_mode(self, media: str = "image") -> str:
        """SAM2 input rounding for "image" or "video" frames."""
        mode = self.sam2_pixel_mode
        return mode.get(media, mode.get("image", "fp32")) if isinstance(mode, dict) else mode

    @property
    def prompt_dim(self) -> int:
        return self.sam2_config.prompt_encoder_config.hidden_size
