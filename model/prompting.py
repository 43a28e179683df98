"""Builds prompt token ids from the templates in `prompts/`, keeping user text as data.

Template strings are control text (tokenized with their special tokens); user text is data: every added token
of the tokenizer that appears in it, special or not (`[SEG]`, `<|im_start|>`, but also `<think>`, `<tool_call>`,
`<|fim_prefix|>`, which tokenizers mark as added but not special), is broken into ordinary tokens. Media and
`[SEG]` ids are inserted by code only.
"""

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

from transformers import PreTrainedTokenizerBase

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
    region's image tokens in a `<vp>` run (Sa2VA's wording); without, the note on numbered marks on the image."""
    texts = _load("regions.json")["marks" if media is None else "tokens"]
    items = [texts["item"].format(number=n, media=m) for n, m in zip(numbers, media or [""] * len(numbers))]
    return texts["intro"].format(count=len(numbers)) + texts["separator"].join(items) + texts["end"]


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
        self.stop_ids = [i for i in (tokenizer.convert_tokens_to_ids(s) for s in template.stop)
                         if i is not None and i != tokenizer.unk_token_id]
        # what the tokenizer puts before any encoded text (InternLM2's `<s>`; empty for Qwen tokenizers)
        self.start_ids: list[int] = tokenizer("", add_special_tokens=True)["input_ids"]
        self._added_pattern, self.added_ids = _added_tokens(tokenizer)

    def control(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

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
