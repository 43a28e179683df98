"""Builds prompt token ids from the templates in `prompts/`, keeping user text as data.

Template strings are control text (tokenized with their special tokens); user text is data: every added token
of the tokenizer that appears in it, special or not (`[SEG]`, `<|im_start|>`, but also `<think>`, `<tool_call>`,
`<|fim_prefix|>`, which tokenizers mark as added but not special), is broken into ordinary tokens. Media and
`[SEG]` ids are inserted by code only.

An answer ends as in Sa2VA's official generation: at the tokenizer's end-of-sequence token, or once its text ends
with one of the template's stop words. A stop word the tokenizer has a token for is that token; one it has none for
(`phi3_chat`'s `<|end|>` with Sa2VA-4B's Qwen2.5 tokenizer) is matched on the decoded text, line breaks ignored.
"""

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria

from model.errors import InputError


@dataclass(frozen=True)
class ChatTemplate:
    system: str
    user: str
    assistant: str
    assistant_end: str
    stop: tuple[str, ...]


@dataclass(frozen=True)
class MediaLayout:
    block: str
    frame_separator: str
    content: str


def _read(name: str) -> str:
    """A file of the `prompts` package (installed as package data, or beside the source tree)."""
    return files("prompts").joinpath(name).read_text(encoding="utf-8")


@lru_cache
def _load(name: str) -> dict:
    return json.loads(_read(name))


def load_template(name: str) -> ChatTemplate:
    templates = _load("templates.json")
    if name not in templates or name.startswith("_"):
        raise ValueError(f"Unknown chat template {name!r}; known: {sorted(k for k in templates if k[0] != '_')}.")
    spec = templates[name]
    return ChatTemplate(spec["system"], spec["user"], spec["assistant"], spec["assistant_end"], tuple(spec["stop"]))


def load_media_layout(family: str) -> MediaLayout:
    return MediaLayout(**_load("media.json")[family])


def region_note(numbers: list[int], media: list[str] | None = None) -> str:
    """The note introducing a turn's regions (numbered `numbers`, `prompts/regions.json`): with `media`, each
    region's image tokens in a `<vp>` run (Sa2VA's wording); without, the note on the regions' marks on the image."""
    texts = _load("regions.json")["marks" if media is None else "tokens"]
    items = [texts["item"].format(number=n, media=m, mark=region_mark(n))
             for n, m in zip(numbers, media or [""] * len(numbers))]
    return texts["intro"].format(count=len(numbers)) + texts["separator"].join(items) + texts["end"]


def region_mark(number: int) -> str:
    """The label drawn on region `number`'s mark ("R2")."""
    return _load("regions.json")["mark"].format(number=number)


def agent_texts() -> dict[str, str]:
    """Agent mode's system prompt and round texts (`prompts/agent.json`, see `model.agent.loop`)."""
    return dict(_load("agent.json"))


def default_system_prompt() -> str:
    return _read("system.txt").strip()


def _added_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[re.Pattern | None, frozenset[int]]:
    """A pattern finding any added token's text (longest first, as the tokenizer matches them) and their ids."""
    added = tokenizer.added_tokens_decoder
    texts = sorted({token.content for token in added.values() if token.content}, key=len, reverse=True)
    return (re.compile("|".join(map(re.escape, texts))) if texts else None), frozenset(added)


def _split(template: str, field: str) -> tuple[str, str]:
    before, _, after = template.partition("{" + field + "}")
    return before, after


class PromptBuilder:
    """Token ids for user turns, answers and media blocks of one checkpoint."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate, layout: MediaLayout):
        self.tokenizer = tokenizer
        self.template = template
        self.layout = layout
        # the template's stop words that are single tokens, then the tokenizer's end of sequence
        stop_ids = [self._token_id(word) for word in template.stop]
        self.stop_ids = [i for i in dict.fromkeys([*stop_ids, tokenizer.eos_token_id]) if i is not None]
        # stop words matched on the text (the tokenizer has no token for them)
        self.stop_texts = tuple(word for word, i in zip(template.stop, stop_ids) if i is None)
        # what closes an answer in the history when generation did not stop by itself
        self.end_ids = self.control(template.stop[0])
        # what the tokenizer puts before any encoded text (InternLM2's `<s>`; empty for Qwen tokenizers)
        self.start_ids: list[int] = tokenizer("", add_special_tokens=True)["input_ids"]
        self._added_pattern, self.added_ids = _added_tokens(tokenizer)

    def _token_id(self, token: str) -> int | None:
        i = self.tokenizer.convert_tokens_to_ids(token)
        return None if i is None or i == self.tokenizer.unk_token_id else i

    def control(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def ends_with_stop_text(self, ids: list[int]) -> bool:
        """Whether the text of `ids` ends with a stop word matched on text (line breaks ignored, as Sa2VA's
        official `StopWordStoppingCriteria` reads it)."""
        if not self.stop_texts or not ids:
            return False
        text = self.tokenizer.decode(ids).replace("\r", "").replace("\n", "")
        return text.endswith(self.stop_texts)

    def ends_with_stop(self, ids: list[int]) -> bool:
        """Whether an answer ended by itself: with a stop token or a stop word's text."""
        return bool(ids) and (ids[-1] in self.stop_ids or self.ends_with_stop_text(ids))

    def without_stop_text(self, text: str) -> str:
        """An answer's shown text without the stop word matched on text that ended it."""
        for word in self.stop_texts:
            text = text.removesuffix(word)
        return text.rstrip()

    def stopping_criteria(self, prompt_length: int) -> list[StoppingCriteria]:
        """What `generate` needs besides `eos_token_id=stop_ids` for a prompt of `prompt_length` ids: a text
        match of the stop words that are not tokens (none for most templates)."""
        return [_TextStop(self, prompt_length)] if self.stop_texts else []

    def data(self, text: str) -> list[int]:
        """`text` as plain tokens: never an added (control) token, whatever the person typed."""
        ids = self._split_added(text)
        if self.added_ids.intersection(ids):  # a one-character added token, or a normalizer that makes one
            raise InputError("The message contains text the model would read as a control marker; please rephrase.")
        return ids

    def _split_added(self, text: str) -> list[int]:
        """Ids of `text` with each added token's text cut after its first character (`<` + `think>`)."""
        if not text:
            return []
        ids: list[int] = []
        start = 0
        for found in self._added_pattern.finditer(text) if self._added_pattern else ():
            ids += self._plain(text[start:found.start()])
            token = found.group()
            ids += self._plain(token[0]) + self._split_added(token[1:])
            start = found.end()
        return ids + self._plain(text[start:])

    def _plain(self, text: str) -> list[int]:
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def media_block(self, runs: list[list[int]]) -> list[int]:
        """One block per image or frame (`runs` holds each one's image-token ids), joined by the separator."""
        before, after = _split(self.layout.block, "media")
        ids: list[int] = []
        for k, run in enumerate(runs):
            if k:
                ids += self.control(self.layout.frame_separator)
            ids += self.control(before) + run + self.control(after)
        return ids

    def region_block(self, numbers: list[int], runs: list[list[int]] | None = None) -> list[int]:
        """`region_note` as ids: with each region's image-token ids in its `<vp>` run when `runs` is given."""
        if runs is None:
            return self.control(region_note(numbers))
        # The text between runs is tokenized whole, as the official code tokenizes the whole string.
        pieces = region_note(numbers, ["\0"] * len(numbers)).split("\0")
        ids = self.control(pieces[0])
        for run, piece in zip(runs, pieces[1:]):
            ids += run + self.control(piece)
        return ids

    def system_turn(self, system: str) -> list[int]:
        if not system:
            return []
        before, after = _split(self.template.system, "system")
        return self.control(before) + self.data(system) + self.control(after)

    def user_turn(self, text: str, media_ids: list[int] | None = None) -> list[int]:
        """`<user>{media}{text}</user><assistant>` as ids: the prompt for one new answer."""
        user_before, user_after = _split(self.template.user, "content")
        media_first = self.layout.content.index("{media}") < self.layout.content.index("{text}")
        media_ids = media_ids or []
        text_ids = self.data(text)
        content = media_ids + text_ids if media_first else text_ids + media_ids
        return self.control(user_before) + content + self.control(user_after) + self.control(self.template.assistant)

    def media_token_ids(self) -> list[int]:
        """Ids of the layout's media markers (e.g. `<img>`, `<|vision_start|>`): code inserts them, the model
        must never generate them."""
        return sorted(set(self.control(self.layout.block.replace("{media}", ""))))

    def answer_end(self) -> list[int]:
        return self.control(self.template.assistant_end)


class _TextStop(StoppingCriteria):
    """Stops a sequence once its answer (the ids after the prompt) ends with a stop word's text."""

    def __init__(self, prompts: PromptBuilder, prompt_length: int):
        self.prompts = prompts
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        done = [self.prompts.ends_with_stop_text(row[self.prompt_length:].tolist()) for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
