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
    With `keep_graph=True` the states stay attached to the autograd graph (teacher-forced training); batches
    are read row-major (sample by sample, in token order).
    """

    def __init__(self, vlm: nn.Module, state_module: nn.Module, seg_token_id: int, skip_first: bool = True,
                 keep_graph: bool = False, read_input: bool = False):
        self.vlm = vlm
        self.state_module = state_module
        self.read_input = read_input  # the module's input (e.g. before the final norm) instead of its output
        self.seg_token_id = seg_token_id
        self.skip_first = skip_first
        self.keep_graph = keep_graph
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
        hidden = args[0] if self.read_input else output
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        rows = self._ids[:, -hidden.shape[1]:] == self.seg_token_id
        if rows.any():
            states = hidden[rows].float()
            self.states.append(states if self.keep_graph else states.detach())

    def stacked(self) -> torch.Tensor | None:
        return torch.cat(self.states) if self.states else None
