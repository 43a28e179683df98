"""SAM2's Hiera image encoder without the work transformers 5.23's blocks do for nothing: every attention computes
a softmax of query-key products it never reads, every windowed block pads and crops its input even when no padding
is needed (two copies of the block's activations each time). The encoder is most of an image turn on a CPU and runs
on every frame of a video.

`streamline_hiera` gives the blocks and attentions of a loaded SAM2 the forwards below: the same weights, the same
arithmetic in the same order, bit-identical outputs (tested against the library's forward). On a 1024-px Hiera-L
forward that is 48 batched products with their softmax and about 90 copies of a block's activations fewer; in
torch's profiler on a 2-core CPU those took about 1 s of the forward's 19 s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.sam2.modeling_sam2 import Sam2MultiScaleAttention, Sam2MultiScaleBlock, do_pool


class LeanMultiScaleAttention(Sam2MultiScaleAttention):
    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        batch, height, width, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, height * width, 3, self.num_attention_heads, -1)
        query, key, value = torch.unbind(qkv, 2)
        if self.query_stride:  # pooled queries at a stage change
            query = do_pool(query.reshape(batch, height, width, -1), self.query_stride)
            height, width = query.shape[1:3]
            query = query.reshape(batch, height * width, self.num_attention_heads, -1)
        out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                             scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, height, width, -1))


def _windows(hidden: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, H, W, C] → [B * windows, size, size, C], padded at the bottom and right only when needed."""
    batch, height, width, channels = hidden.shape
    pad_h, pad_w = (-height) % size, (-width) % size
    if pad_h or pad_w:
        hidden = F.pad(hidden, (0, 0, 0, pad_w, 0, pad_h))
    padded = (height + pad_h, width + pad_w)
    hidden = hidden.view(batch, padded[0] // size, size, padded[1] // size, size, channels)
    return hidden.permute(0, 1, 3, 2, 4, 5).reshape(-1, size, size, channels), padded


def _unwindow(windows: torch.Tensor, size: int, padded: tuple[int, int], original: tuple[int, int]) -> torch.Tensor:
    rows, cols = padded[0] // size, padded[1] // size
    batch = windows.shape[0] // (rows * cols)
    hidden = windows.view(batch, rows, cols, size, size, -1).permute(0, 1, 3, 2, 4, 5)
    hidden = hidden.reshape(batch, padded[0], padded[1], -1)
    if padded != tuple(original):
        hidden = hidden[:, :original[0], :original[1]].contiguous()
    return hidden


class LeanMultiScaleBlock(Sam2MultiScaleBlock):
    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.layer_norm1(hidden_states)
        if self.dim != self.dim_out:
            residual = do_pool(self.proj(hidden_states), self.query_stride)
        size = self.window_size
        if size > 0:
            hidden_states, padded = _windows(hidden_states, size)
        hidden_states = self.attn(hidden_states)
        if size > 0:
            if self.query_stride:  # the windows shrank with the pooled queries
                size //= self.query_stride[0]
                height, width = residual.shape[1:3]
                padded = (height + (-height) % size, width + (-width) % size)
            hidden_states = _unwindow(hidden_states, size, padded, residual.shape[1:3])
        hidden_states = residual + hidden_states
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


def streamline_hiera(model: nn.Module) -> int:
    """Give every Hiera block and attention inside `model` the lean forward (in place); returns how many modules
    changed. Modules of other classes (subclasses included) are left as they are."""
    lean = {Sam2MultiScaleBlock: LeanMultiScaleBlock, Sam2MultiScaleAttention: LeanMultiScaleAttention}
    changed = 0
    for module in model.modules():
        if type(module) in lean:
            module.__class__ = lean[type(module)]
            changed += 1
    return changed
