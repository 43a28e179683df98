"""The agent's tool-call format: what parses, and the messages the model gets back for what does not."""

import pytest

from model.agent.protocol import KeepCall, NoneCall, SegmentCall, ToolCallError, parse_tool_call


@pytest.mark.parametrize("text, call", [
    ("A plain answer.", None),
    ('<tool_call>{"name": "segment", "arguments": {"phrases": ["red  car", "cup"]}}</tool_call>',
     SegmentCall(("red car", "cup"))),
    ('Let me look. <tool_call>{"name": "segment", "arguments": {"phrases": "cup"}}</tool_call>', SegmentCall(("cup",))),
    ('<tool_call>{"name": "keep", "arguments": {"candidates": [3, 1, 3]}}</tool_call>', KeepCall((3, 1))),
    ('<tool_call>{"name": "none", "arguments": {}}</tool_call>', NoneCall()),
    ('<tool_call>{"name": "none"}', NoneCall()),  # cut off before the closing tag (max_new_tokens)
])
def test_tool_calls_parse(text, call):
    assert parse_tool_call(text) == call


@pytest.mark.parametrize("text, message", [
    ("<tool_call>{not json</tool_call>", "not valid JSON"),
    ('<tool_call>["segment"]</tool_call>', '"name"'),
    ('<tool_call>{"name": "delete_files", "arguments": {}}</tool_call>', "unknown tool"),
    ('<tool_call>{"name": "segment", "arguments": {"phrases": []}}</tool_call>', "non-empty noun phrases"),
    ('<tool_call>{"name": "segment", "arguments": {"phrases": ["  "]}}</tool_call>', "non-empty noun phrases"),
    ('<tool_call>{"name": "segment", "arguments": {"phrases": ["a", "b", "c"]}}</tool_call>', "at most 2"),
    ('<tool_call>{"name": "keep", "arguments": {"candidates": ["1"]}}</tool_call>', "mark numbers"),
    ('<tool_call>{"name": "keep", "arguments": {"candidates": [true]}}</tool_call>', "mark numbers"),
    ('<tool_call>{"name": "keep", "arguments": "1"}</tool_call>', '"arguments" must be'),
])
def test_unusable_tool_calls_say_why(text, message):
    with pytest.raises(ToolCallError, match=message):
        parse_tool_call(text, max_phrases=2)
