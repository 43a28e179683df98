"""A conversation's context kept between turns: the language model's KV cache of the tokens it has read, so that a
follow-up prefills only its new tokens and the vision tower never encodes a picture the cache already holds.

`ContextCache.prefill` finds how much of a new prompt the cache holds: the longest prefix it shares with the ids
the cache covers, provided the media placeholders in it are filled by the same media (`VisionInputs.key`: equal
ids may hide other pictures). It crops the cache to that prefix and says what media the remaining tokens show:
nothing, what the turn added to the conversation's media (new pictures with region marks, new `<vp>` regions), or
everything when nothing can be reused. `keep` records the cache after the turn, or drops it beyond the size limit.
`CacheBudget` keeps the caches of all the conversations of one model under a memory cap.

The cache is handed out for the length of a generation and comes back only through `keep`, so a turn that fails
leaves nothing stale. Whatever a conversation's history becomes (a stopped stream that records nothing, an undo
that restores an older copy of the conversation, which shares this object), the next prompt is matched against
what the cache really holds: rewinding is a crop, never a wrong reuse.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedConfig

from model.families import VisionInputs


@dataclass
class Prefill:
    """Where one generation starts: `cache` holds the prompt's first `start` tokens; `media` is what the others
    show (all the turn's media when `start` is 0; None without media)."""

    cache: DynamicCache
    start: int
    media: VisionInputs | None


class ContextCache:
    """The cache of one conversation's context, the ids it covers and the media behind them."""

    def __init__(self, placeholder_ids: Iterable[int]):
        self.placeholder_ids = frozenset(placeholder_ids)  # the prompt tokens filled with media features
        self.clear()

    def clear(self) -> None:
        """Drop everything: the next prompt is read from its first token."""
        self.cache: DynamicCache | None = None
        self.ids: list[int] = []
        # Media key → how many placeholders of `ids` those media fill (the media of the last turn, and the media
        # they grew from: a prefix holding only the latter serves a conversation rewound to them).
        self.media: dict[int, int] = {}
        # The whole-image tile's VLM features of the context's picture, which later `<vp>` regions read.
        self.region_source: torch.Tensor | None = None

    def prefill(self, ids: list[int], vision: VisionInputs | None, config: PreTrainedConfig) -> Prefill:
        """The cache to continue for the prompt `ids` about `vision` (cropped to what it shares with them, or a
        new one); until `keep` gives it back, this context holds nothing."""
        cache, self.cache = self.cache, None
        start, media = self._reusable(ids, vision) if cache is not None else (0, vision)
        if start == 0:
            self.clear()
            return Prefill(DynamicCache(config=config.get_text_config(decoder=True)), 0, vision)
        cache.crop(start - cache.get_seq_length())
        # Media that filled placeholders past the crop no longer describe the cache (another copy of the
        # conversation may have grown other pictures there).
        kept = sum(token in self.placeholder_ids for token in ids[:start])
        self.media = {key: count for key, count in self.media.items() if count <= kept}
        return Prefill(cache, start, media)

    def _reusable(self, ids: list[int], vision: VisionInputs | None) -> tuple[int, VisionInputs | None]:
        """How many tokens of `ids` the cache can serve, and the media the others show; (0, vision): none."""
        added = None
        if vision is None:
            known = 0
        elif vision.key in self.media:
            known = self.media[vision.key]
        elif vision.grown_from is not None and vision.grown_from[0] in self.media:
            known, added = self.media[vision.grown_from[0]], vision.grown_from[1]
        else:
            return 0, vision
        # At least the prompt's last token is fed: its logits choose the answer's first token.
        start = _common_prefix(self.ids, ids[:-1])
        places = [i for i, token in enumerate(ids) if token in self.placeholder_ids]
        if len(places) > known:  # beyond the media this context knows, equal ids may show other pictures
            start = min(start, places[known])
        cached = bisect_left(places, start)
        if start == 0 or cached != known or len(places) - cached != (added.placeholders if added else 0):
            return 0, vision
        if added is None:
            return start, None if vision is None else VisionInputs([])
        return (start, added) if not added.regions or self.region_source is not None else (0, vision)

    def keep(self, cache: DynamicCache, ids: list[int], vision: VisionInputs | None, max_tokens: int) -> None:
        """Record `cache` after a turn: it holds the first `cache.get_seq_length()` of `ids`, about `vision`. Over
        `max_tokens`, or with sliding-window layers (which forget tokens, so cannot be rewound), it is dropped."""
        held = cache.get_seq_length()
        if held > max_tokens or any(layer.is_sliding for layer in cache.layers):
            self.clear()
            return
        self.cache, self.ids = cache, ids[:held]
        if vision is not None:
            self.media[vision.key] = vision.placeholders
            if vision.grown_from is not None:
                base, added = vision.grown_from
                self.media.setdefault(base, vision.placeholders - added.placeholders)

    @property
    def tokens(self) -> int:
        """How many tokens the cache holds."""
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """The memory the cache's keys and values take."""
        if self.cache is None:
            return 0
        return sum(tensor.numel() * tensor.element_size() for layer in self.cache.layers
                   for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None))
                   if isinstance(tensor, torch.Tensor))


class CacheBudget:
    """The caches of all the conversations of one model under one memory cap: past it, the caches of the
    conversations continued longest ago are dropped first (their next turn reads its whole history again)."""

    def __init__(self):
        # the contexts that hold a cache, least recently continued first; a conversation that is gone leaves
        self._contexts: weakref.WeakKeyDictionary[ContextCache, None] = weakref.WeakKeyDictionary()

    def kept(self, context: ContextCache, max_bytes: int) -> None:
        """`context` was just continued; drop caches, least recently continued first (`context` last), until all
        of them together take at most `max_bytes`."""
        self._contexts.pop(context, None)
        self._contexts[context] = None
        total = self.nbytes
        for oldest in list(self._contexts):
            if total <= max_bytes:
                break
            total -= oldest.nbytes
            oldest.clear()
            del self._contexts[oldest]

    @property
    def nbytes(self) -> int:
        """The memory all the caches take."""
        return sum(context.nbytes for context in list(self._contexts))


def mrope_positions(vlm: nn.Module, inputs: dict[str, torch.Tensor], vision: VisionInputs | None
                    ) -> torch.Tensor | None:
    """Position ids of the whole prompt `inputs["input_ids"]` as transformers' `generate` builds them on an M-RoPE
    model (Qwen-VL): a text row, then temporal, height and width rows from the grids of `vision`'s pictures; None
    on a model with 1-D positions. A continued cache needs them passed: transformers would otherwise offset new
    tokens by the VLM's `rope_deltas`, which belong to whichever conversation ran last."""
    rope_index = getattr(vlm.model, "get_rope_index", None)
    if rope_index is None:
        return None
    input_ids = inputs["input_ids"]
    text = torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape[0], -1)
    grids = {name: grid.to(input_ids.device) for name, grid in (vision.tensors if vision else {}).items()
             if name in ("image_grid_thw", "video_grid_thw")}
    if not grids:
        return text[None].expand(4, -1, -1)
    spatial, _ = rope_index(input_ids, mm_token_type_ids=inputs["mm_token_type_ids"], **grids)
    return torch.cat([text[None], spatial])


def picture_parts(ids: list[int], start: int, runs: list[list[int]], placeholder_ids: frozenset[int] | set[int],
                  max_tokens: int) -> list[tuple[int, int]]:
    """Where to cut the uncached prompt `ids[start:]`, whose placeholders are the pictures' `runs` in order, so
    that each part ends just after a picture and holds at most `max_tokens` tokens unless one picture alone is
    longer: [(end, pictures in the part)] for every part but the last, which runs from the last cut to the prompt's
    end (the part `generate` reads)."""
    places = [i for i in range(start, len(ids)) if ids[i] in placeholder_ids]
    if len(places) != sum(len(run) for run in runs):
        return []
    ends, filled = [], 0
    for run in runs:
        filled += len(run)
        ends.append(places[filled - 1] + 1)
    parts, part_start, count = [], start, 0
    for end, next_end in zip(ends, ends[1:]):
        count += 1
        if next_end - part_start > max_tokens:  # the next picture would not fit: cut after this one
            parts.append((end, count))
            part_start, count = end, 0
    return parts


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)
