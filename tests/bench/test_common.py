"""The benchmarks' shared pieces (`bench.common`): forced answers, tables, and the tokenizer and config ids of the
real-layout Qwen3-VL checkpoints the official code runs. No timing, no large checkpoint."""

import torch

from bench.common import (Forced, markdown_table, qwen_vl_tokenizer, reset_peak_rss, rss_mib, time_calls,
                          with_token_ids)
from model.sa2va.published import RELEASES


def test_forced_answers_restart_with_each_generate_call():
    forced = Forced([5, 7, 2])
    scores = torch.zeros(1, 10)

    def step(length: int) -> int:
        return int(forced(torch.zeros(1, length, dtype=torch.long), scores).argmax())

    assert [step(n) for n in (4, 5, 6, 7)] == [5, 7, 2, 2] and forced.steps == 4 and forced.start == 4
    assert [step(n) for n in (12, 13)] == [5, 7]  # a new call: the prompt is not one token longer
    forced.reset([3])
    assert step(14) == 3 and forced.first_at is not None


def test_markdown_table():
    assert markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"


def test_peak_rss_is_reset_and_read():
    assert reset_peak_rss() > 0 and rss_mib("VmHWM:") >= rss_mib() > 0


def test_qwen3_vl_checkpoint_ids_name_the_tokenizers_tokens():
    tokenizer = qwen_vl_tokenizer()
    vocab = tokenizer.get_vocab()
    for token in ("[SEG]", "<p>", "</p>", "<vp>", "</vp>", "<|im_start|>", "<|im_end|>", "<|vision_pad|>",
                  "<think>"):
        assert token in vocab
    release = RELEASES["Sa2VA-Qwen3-VL-4B"].config
    config = with_token_ids(release, tokenizer)
    assert config["image_token_id"] == vocab["<|image_pad|>"]
    assert config["vision_start_token_id"] == vocab["<|vision_start|>"]
    assert config["text_config"]["eos_token_id"] == vocab["<|im_end|>"]
    assert config["text_config"]["vocab_size"] == release["text_config"]["vocab_size"]  # the release's widths
    assert release["image_token_id"] == 151655  # the release's config is left as published
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n")


def test_time_calls_adds_arguments_records_and_restores():
    class Owner:
        def run(self, x, scale=1):
            return x * scale

    owner, spans = Owner(), []
    restore = time_calls(owner, "run", lambda start, end: spans.append(end - start), extra={"scale": 3})
    assert owner.run(2) == 6 and len(spans) == 1 and spans[0] >= 0
    restore()
    assert owner.run(2) == 2 and "run" not in vars(owner)
