"""Capture the hidden state at every `[SEG]` input position with hooks, instead of `output_hidden_states`.

A forward pre-hook on the VLM records the input ids of each call; a forward hook on the family's capture
module (final norm, or last decoder layer) keeps only the rows whose input token is `[SEG]`. Memory is a few
vectors, whatever the number of layers and tokens.
"""

import torch
from torch import nn


class SegCapture:
    """Context manager collecting `[SEG]` hidden states over the forwards of one `generate` or forward call.

    With `skip_first=True` the first forward (the prompt prefill) is ignored, so `[SEG]` tokens in the
    conversation history do not produce masks; only tokens the model generates in this turn do.
    """

    def __init__(self, vlm: nn.Module, state_module: nn.Module, seg_token_id: int, skip_first: bool = True):
        self.vlm = vlm
        self.state_module = state_module
        self.seg_token_id = seg_token_id
        self.skip_first = skip_first
        self.states: list[torch.Tensor] = []
        self._calls = 0
        self._ids: torch.Tensor | None = None
        self._handles: list = []

    def __enter__(self) -> "SegCapture":
        self._handles = [
            self.vlm.register_forward_pre_hook(self._record_ids, with_kwargs=True),
            self.state_module.register_forward_hook(self._keep_seg_rows),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _record_ids(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._calls += 1
        active = ids is not None and not (self.skip_first and self._calls == 1)
        self._ids = ids if active else None

    def _keep_seg_rows(self, module, args, output) -> None:
        if self._ids is None:
            return
        hidden = output[0] if isinstance(output, tuple) else output
        # Batch size 1: the rows whose input token is [SEG], in order.
        rows = self._ids[0, -hidden.shape[1]:] == self.seg_token_id
        if rows.any():
            self.states.append(hidden[0, rows].detach().float())

    def stacked(self) -> torch.Tensor | None:
        return torch.cat(self.states) if self.states else None
