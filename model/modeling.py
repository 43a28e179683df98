"""The SegChat network: a vision-language model, a [SEG] projector and SAM2, as one `PreTrainedModel`."""

from torch import nn
from transformers import AutoModelForImageTextToText, PreTrainedModel, Sam2VideoModel

from model.config import SegChatConfig


class SegChatModel(PreTrainedModel):
    """Holds the three parts; the turn logic lives in `model.segchat` and `model.segment`."""

    config_class = SegChatConfig
    base_model_prefix = "segchat"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["sam2", "projector"]

    def __init__(self, config: SegChatConfig):
        super().__init__(config)
        self.vlm = AutoModelForImageTextToText.from_config(config.vlm_config)
        self.sam2 = Sam2VideoModel(config.sam2_config)
        hidden = config.text_hidden_size
        self.projector = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, config.prompt_dim))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vlm.get_input_embeddings()

    def language_model(self) -> nn.Module:
        """The decoder stack of the VLM (the part that is quantized and LoRA-tuned)."""
        return self.vlm.model.language_model
