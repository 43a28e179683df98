"""The agent turn: a plain vision-language model plans, SAM 3 finds candidates, the model chooses among them drawn
as numbered marks on the image (set-of-mark prompting), then answers naming what it kept.

Rounds, each one generation on a prompt with one image (the conversation's text history before it):
1. plan — the image and the question: a plain answer ends the turn; a `segment` call runs SAM 3.
2. choose — the image with the candidates' numbered marks: `keep` some, `segment` other phrases (another choose
   round), or `none`.
3. answer — the image with the kept objects' marks: the final answer.

Bounded by `AgentOptions`; a tool call that cannot be used gets one corrective retry, then the turn answers without
masks and says so. Every step is recorded in the trace. Round texts are data in `prompts/agent.json`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from model.agent.protocol import KeepCall, NoneCall, SegmentCall, ToolCallError, parse_tool_call
from model.media.render import numbered_marks
from model.prompting import agent_texts
from model.segmenters.base import Segment

Generate = Callable[[str, Image.Image], list[int]]  # round text, image → the model's answer ids


@dataclass(frozen=True)
class AgentOptions:
    max_rounds: int = 3  # choose rounds (one after each segment call)
    max_tool_calls: int = 4  # segment calls
    max_candidates: int = 12  # marks drawn in one choose round, best scores first


@dataclass
class AgentStep:
    """One step of the trace: what the model wrote or what the tool returned."""

    kind: str  # "segment" | "candidates" | "keep" | "none" | "error" | "limit" | "answer"
    text: str
    phrases: list[str] = field(default_factory=list)
    candidates: list[tuple[int, str, float]] = field(default_factory=list)  # (mark number, phrase, score)
    kept: list[int] = field(default_factory=list)  # mark numbers


@dataclass
class AgentOutcome:
    answer: str  # the final answer as shown (it enters the conversation's history as text)
    segments: list[Segment]  # the kept objects, labelled with their phrases
    trace: list[AgentStep]
    warnings: list[str]


def fill(template: str, **values: str) -> str:
    """`template` with each {name} replaced (the person's text may hold braces: no `str.format`)."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


class AgentTurn:
    """One question about one image; iterate `run()` for the steps, the last item being the `AgentOutcome`."""

    def __init__(self, question: str, image: Image.Image, generate: Generate, decode: Callable[[list[int]], str],
                 find: Callable[[list[str]], list[Segment]], options: AgentOptions):
        self.question, self.image = question, image
        self.generate, self.decode, self.find = generate, decode, find
        self.options = options
        self.texts = agent_texts()
        self.trace: list[AgentStep] = []
        self.warnings: list[str] = []

    def run(self) -> Iterator[AgentStep | AgentOutcome]:
        options, texts = self.options, self.texts
        prompt, image = fill(texts["plan"], question=self.question), self.image
        candidates: list[Segment] = []
        calls = rounds = 0
        retried = False
        while True:
            output = self.decode(self.generate(prompt, image))
            try:
                call = parse_tool_call(output)
                call = self._usable(call, candidates, calls)
            except ToolCallError as err:
                yield self._step("error", output, text_error=str(err))
                if retried:
                    self.warnings.append("The model's tool calls could not be used, so nothing was segmented.")
                    break
                retried = True
                prompt = prompt + "\n\n" + fill(texts["retry"], error=str(err))
                continue
            if call is None:  # a plain answer
                if rounds == 0:
                    yield self._step("answer", output)
                    yield AgentOutcome(output, [], self.trace, self.warnings)
                    return
                self.warnings.append("The model answered without choosing among the objects found, so none is "
                                     "segmented.")
                break
            if isinstance(call, SegmentCall):
                if calls >= options.max_tool_calls or rounds >= options.max_rounds:
                    yield self._step("limit", output)
                    self.warnings.append(f"The search stopped after {calls} tool calls and {rounds} rounds "
                                         "without a choice, so nothing was segmented.")
                    break
                calls, rounds = calls + 1, rounds + 1
                yield self._step("segment", output, phrases=list(call.phrases))
                candidates = self._candidates(call.phrases)
                yield self._step("candidates", "", candidates=[(i + 1, c.label or "", c.score)
                                                                 for i, c in enumerate(candidates)])
                prompt, image = self._choose_prompt(call.phrases, candidates)
                retried = False
                continue
            if isinstance(call, KeepCall):
                yield self._step("keep", output, kept=list(call.candidates))
                kept = [candidates[n - 1] for n in call.candidates]
                yield from self._answer(kept)
                return
            yield self._step("none", output)
            break
        yield from self._answer([])

    def _usable(self, call, candidates: list[Segment], calls: int):
        """`call`, or `ToolCallError` when it does not fit this point of the turn."""
        if isinstance(call, (KeepCall, NoneCall)) and calls == 0:
            raise ToolCallError("there are no candidates yet: call segment first")
        if isinstance(call, KeepCall):
            wrong = [n for n in call.candidates if not 1 <= n <= len(candidates)]
            if wrong:
                marks = f"1 to {len(candidates)}" if candidates else "none"
                raise ToolCallError(f"there is no mark {wrong[0]}; the marks are {marks}")
        return call

    def _candidates(self, phrases: tuple[str, ...]) -> list[Segment]:
        found = [s for s in self.find(list(phrases)) if s.found]
        return sorted(found, key=lambda s: -s.score)[:self.options.max_candidates]

    def _choose_prompt(self, phrases: tuple[str, ...], candidates: list[Segment]) -> tuple[str, Image.Image]:
        texts = self.texts
        if not candidates:
            return fill(texts["no_candidates"], question=self.question,
                        phrases=", ".join(f'"{p}"' for p in phrases)), self.image
        listing = "\n".join(f"{i}: {c.label} (score {c.score:.2f})" for i, c in enumerate(candidates, start=1))
        return fill(texts["choose"], question=self.question, candidates=listing), self._marked(candidates)

    def _marked(self, segments: list[Segment]) -> Image.Image:
        return Image.fromarray(numbered_marks(np.asarray(self.image), [s.mask for s in segments]))

    def _answer(self, kept: list[Segment]) -> Iterator[AgentStep | AgentOutcome]:
        if kept:
            names = ", ".join(f"{i} = {s.label}" for i, s in enumerate(kept, start=1))
            prompt, image = fill(self.texts["answer"], question=self.question, kept=names), self._marked(kept)
        else:
            prompt, image = fill(self.texts["answer_none"], question=self.question), self.image
        output = self.decode(self.generate(prompt, image))
        if "<tool_call>" in output:  # the answer round has no tools: keep the text before the block
            output = output.split("<tool_call>")[0].strip() or self._fallback(kept)
        yield self._step("answer", output)
        yield AgentOutcome(output, kept, self.trace, self.warnings)

    @staticmethod
    def _fallback(kept: list[Segment]) -> str:
        if not kept:
            return "I could not find it in the image."
        return "Found: " + ", ".join(s.label or "object" for s in kept) + "."

    def _step(self, kind: str, text: str, text_error: str | None = None, **fields) -> AgentStep:
        step = AgentStep(kind, text if text_error is None else f"{text}\n[{text_error}]", **fields)
        self.trace.append(step)
        return step


def describe_step(step: AgentStep) -> str:
    """A short line for a step, shown while the turn runs (the answer step shows the answer)."""
    if step.kind == "segment":
        return "Looking for " + ", ".join(f"“{p}”" for p in step.phrases) + "…"
    if step.kind == "candidates":
        return f"{len(step.candidates)} candidates found." if step.candidates else "Nothing found."
    if step.kind == "keep":
        return "Keeping " + ", ".join(str(n) for n in step.kept) + "."
    if step.kind == "none":
        return "None of them fits."
    if step.kind == "error":
        return "A tool call could not be used."
    if step.kind == "limit":
        return "The search limit is reached."
    return step.text
