"""`PromptBuilder`'s stop words: where an answer ends, as Sa2VA's official generation ends it (the tokenizer's end of
sequence, or a template stop word: a token where the tokenizer has one, else matched on the answer's text)."""

import torch
from tokenizers import AddedToken

from model.prompting import PromptBuilder, load_media_layout, load_template
from model.tiny import build_tokenizer


def _prompts(template: str, extra_tokens: tuple[str, ...] = ()) -> PromptBuilder:
    tokenizer = build_tokenizer("internvl")  # Qwen2.5's chat tokens; eos <|im_end|>
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in extra_tokens], special_tokens=True)
    return PromptBuilder(tokenizer, load_template(template), load_media_layout("internvl"))


def test_stop_tokens_are_the_template_stop_words_then_the_end_of_sequence():
    prompts = _prompts("qwen_chat")
    ids = prompts.tokenizer.convert_tokens_to_ids
    assert prompts.stop_ids == [ids("<|im_end|>"), ids("<|endoftext|>")]  # eos <|im_end|> listed once
    assert prompts.stop_texts == () and prompts.stopping_criteria(5) == []
    assert prompts.end_ids == [ids("<|im_end|>")]


def test_a_stop_word_the_tokenizer_has_a_token_for_is_that_token():
    prompts = _prompts("phi3_chat", ("<|user|>", "<|assistant|>", "<|end|>"))
    assert prompts.stop_ids == [prompts.tokenizer.convert_tokens_to_ids("<|end|>"), prompts.tokenizer.eos_token_id]
    assert prompts.stop_texts == ()


def test_a_stop_word_without_a_token_ends_the_answer_by_its_text():
    """Sa2VA-4B: `phi3_chat` on a Qwen2.5 tokenizer, which has no `<|end|>` token."""
    prompts = _prompts("phi3_chat")
    assert prompts.stop_ids == [prompts.tokenizer.eos_token_id]
    assert prompts.stop_texts == ("<|end|>",)
    assert prompts.end_ids == prompts.control("<|end|>") and len(prompts.end_ids) > 1
    assert prompts.ends_with_stop(prompts.control("Sure, it is red.<|end|>"))
    assert prompts.ends_with_stop(prompts.control("Sure.<|end|>\n"))  # line breaks are ignored, as officially
    assert not prompts.ends_with_stop(prompts.control("Sure.<|end"))
    assert not prompts.ends_with_stop(prompts.control("<|end|> and more"))
    assert prompts.without_stop_text("Sure, it is red.<|end|>") == "Sure, it is red."


def test_the_text_criterion_reads_the_answer_only():
    prompts = _prompts("phi3_chat")
    prompt = prompts.control("Say <|end|>")  # a prompt ending with the stop word's text does not stop
    answers = [prompts.control(" Done.<|end|>"), prompts.control(" Not yet.")]
    width = max(map(len, answers))
    rows = [prompt + [prompts.tokenizer.pad_token_id] * (width - len(a)) + a for a in answers]
    (criterion,) = prompts.stopping_criteria(len(prompt))
    assert criterion(torch.tensor(rows), None).tolist() == [True, False]
    assert criterion(torch.tensor([prompt]), None).tolist() == [False]
