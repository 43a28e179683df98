"""The agent's one tool-call format: a JSON object in a `<tool_call>` block, as Qwen-style chat models write them.

    <tool_call>{"name": "segment", "arguments": {"phrases": ["red car", "cup"]}}</tool_call>
    <tool_call>{"name": "keep", "arguments": {"candidates": [1, 3]}}</tool_call>
    <tool_call>{"name": "none", "arguments": {}}</tool_call>

Only the model's own output is parsed here, never the person's message. Text without a block is a plain answer;
a block that cannot be used raises `ToolCallError` with a message the model can read and correct.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)


class ToolCallError(ValueError):
    """A tool-call block that is not valid JSON, names an unknown tool, or has arguments of the wrong kind."""


@dataclass(frozen=True)
class SegmentCall:
    phrases: tuple[str, ...]


@dataclass(frozen=True)
class KeepCall:
    candidates: tuple[int, ...]  # the numbers of the marks, from 1


@dataclass(frozen=True)
class NoneCall:
    pass


ToolCall = SegmentCall | KeepCall | NoneCall


def parse_tool_call(text: str, max_phrases: int = 8) -> ToolCall | None:
    """The first tool call in the model's output, or None when the output is a plain answer."""
    match = BLOCK.search(text)
    if match is None:
        return None
    try:
        call = json.loads(match.group(1).strip())
    except json.JSONDecodeError as err:
        raise ToolCallError(f"the block is not valid JSON ({err.msg})") from None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise ToolCallError('a tool call is a JSON object with a "name" and "arguments"')
    arguments = call.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ToolCallError('"arguments" must be a JSON object')
    name = call["name"]
    if name == "segment":
        return SegmentCall(_phrases(arguments.get("phrases"), max_phrases))
    if name == "keep":
        return KeepCall(_numbers(arguments.get("candidates")))
    if name == "none":
        return NoneCall()
    raise ToolCallError(f'unknown tool {name[:40]!r}; the tools are "segment", "keep" and "none"')


def _phrases(value, limit: int) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(p, str) and p.strip() for p in value):
        raise ToolCallError('"phrases" must be a list of non-empty noun phrases')
    if len(value) > limit:
        raise ToolCallError(f"at most {limit} phrases per call")
    return tuple(" ".join(p.split()) for p in value)


def _numbers(value) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(type(n) is int for n in value):
        raise ToolCallError('"candidates" must be a non-empty list of mark numbers')
    return tuple(dict.fromkeys(value))
