"""SAM2's Hiera image encoder (trunk and FPN neck) without the work and the memory transformers 5.23's forwards
spend for nothing. The encoder is most of an image turn on a CPU, runs on every frame of a video, and its peak is the
video turn's peak.

- Every attention computes a softmax of query-key products it never reads; every windowed block pads and crops
  its input even when nothing needs padding (two copies of the block's activations each time).
- The first stage's blocks hold their whole input's activations at once, the MLP's 4x-wide layer twice (before and
  after its GELU): windowed blocks here run in bands of window rows, the GELU in place.
- The neck computes its sine position encodings cell by cell and keeps the finest one in a process-wide cache.

`streamline_hiera` gives the blocks, attentions and position encoding of a loaded SAM2 the forwards below: the same
weights, the same arithmetic, the same outputs (bit-identical whole; in bands, bit-identical at 1024 px, where
`bench/bench_sam2.py` checks it). On a 1024-px Hiera-L, fp32 on 2 CPU cores: one encode raises the peak resident
memory by 234 MiB instead of 432 (`python -m bench.bench_sam2 --memory`), and the library's forward keeps its
cached position encoding (64 MB) after it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import GELUActivation
from transformers.models.sam2.modeling_sam2 import (Sam2MultiScaleAttention, Sam2MultiScaleBlock,
                                                    Sam2SinePositionEmbedding, do_pool)


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
    # A windowed block's largest inputs are run in bands of whole window rows holding about this many tokens.
    band_tokens = 16384

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        """Every token of a windowed block depends on its window only (attention, pooling cells, which lie inside
        windows, and the per-token layers), so a band of whole window rows gives the rows of the output it covers,
        and only one band's activations are alive at a time (the block's MLP alone holds 4x its input)."""
        rows = self._band_rows(hidden_states)
        if rows is None:
            return self._forward(hidden_states)
        height = hidden_states.shape[1]
        out, top_out = None, 0
        for top in range(0, height, rows):
            band = self._forward(hidden_states[:, top:top + rows])
            if out is None:
                out_height = height // self.query_stride[0] if self.query_stride else height
                out = _empty_in_layout_of(band, (band.shape[0], out_height, *band.shape[2:]))
            out[:, top_out:top_out + band.shape[1]] = band
            top_out += band.shape[1]
        return out

    def _band_rows(self, hidden_states: torch.Tensor) -> int | None:
        """Rows of the input per band (a multiple of the window), or None to run the input whole."""
        height, width = hidden_states.shape[1:3]
        if self.window_size == 0 or (torch.is_grad_enabled() and hidden_states.requires_grad):
            return None
        stride = self.query_stride[0] if self.query_stride else 1
        if height % stride or self.window_size % stride:  # pooling cells would straddle the bands' edges
            return None
        rows = max(1, self.band_tokens // (width * self.window_size)) * self.window_size
        return rows if rows < height else None

    def _forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
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
        return hidden_states + self._mlp(self.layer_norm2(hidden_states))

    def _mlp(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The block's MLP, its GELU in place when no gradient flows: the hidden layer (4x the block's width)
        is then held once, not twice."""
        mlp = self.mlp
        if mlp.layers or mlp.sigmoid_output or not _is_exact_gelu(mlp.activation):
            return mlp(hidden_states)
        hidden_states = mlp.proj_in(hidden_states)
        if hidden_states.requires_grad:
            return mlp.proj_out(mlp.activation(hidden_states))
        return mlp.proj_out(torch.ops.aten.gelu_(hidden_states))


def _empty_in_layout_of(like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An empty tensor of `shape` with the dimension order in memory of `like`. The first stage's activations
    are channels-first in memory (the patch embedding is a convolution), and the FPN neck's convolution of the
    stage's output rounds differently in another layout."""
    order = sorted(range(like.dim()), key=lambda dim: like.stride(dim), reverse=True)
    flat = like.new_empty([shape[dim] for dim in order])
    return flat.permute([order.index(dim) for dim in range(like.dim())])


def _is_exact_gelu(activation: nn.Module) -> bool:
    return isinstance(activation, GELUActivation) and activation.act is F.gelu


class SeparableSinePositionEmbedding(Sam2SinePositionEmbedding):
    """The FPN neck's sine position encodings, built from one table per row and one per column: the first half
    of the channels depends on the row only, the second on the column only. The library computes the sines of
    every cell (128 MB of temporaries for the finest level at 1024 px, the encoder's peak once the blocks run in
    bands) and keeps the finest level's encoding in a one-entry cache for the life of the process, though the
    neck's next call always asks for another level first. Same values, same layout, no cache."""

    def forward(self, shape: torch.Size, device: torch.device | str, dtype: torch.dtype,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            return super().forward(shape, device, dtype, mask)
        batch, _, height, width = shape
        features = self.num_position_features
        out = torch.empty(batch, height, width, 2 * features, device=device, dtype=dtype)
        out[..., :features] = self._table(height, device, dtype)[None, :, None]
        out[..., features:] = self._table(width, device, dtype)[None, None]
        return out.permute(0, 3, 1, 2)

    def _table(self, length: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        """[length, features]: the encoding of positions 1..length along one axis (sines and cosines
        interleaved), computed with the library's operations in its order."""
        embed = torch.arange(1, length + 1, dtype=dtype, device=device)
        if self.normalize:
            embed = embed / (embed[-1:] + 1e-6) * self.scale
        features = self.num_position_features
        dim_t = torch.arange(features, dtype=torch.int64, device=device).to(dtype)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / features)
        angles = embed[:, None] / dim_t
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)


def streamline_hiera(model: nn.Module) -> int:
    """Give every Hiera block and attention and the neck's position encoding inside `model` the lean forward
    (in place); returns how many modules changed. Modules of other classes (subclasses included) are left as they
    are."""
    lean = {Sam2MultiScaleBlock: LeanMultiScaleBlock, Sam2MultiScaleAttention: LeanMultiScaleAttention,
            Sam2SinePositionEmbedding: SeparableSinePositionEmbedding}
    changed = 0
    for module in model.modules():
        if type(module) in lean:
            module.__class__ = lean[type(module)]
            changed += 1
    return changed
