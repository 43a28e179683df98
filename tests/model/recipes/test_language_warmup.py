"""The proof's language warm-up: text-only turns that teach the language model to reason from a scene's listing."""
import json

from safetensors.torch import load_file

from model import SegChat
from model.data.synthetic import generate_scenes
from model.recipes.proof.language_warmup import (WARMUP_LOG, ReasoningText, encode_reasoning, grounded_phrases,
                                            warm_up_language)
from model.training.examples import IGNORE_INDEX


def _texts(n: int) -> list[ReasoningText]:
    return [ReasoningText(s.instruction, s.listing, s.reasoning) for s in generate_scenes(n, seed=5, size=64)]


def test_a_text_turn_has_the_training_answer_layout_and_learns_only_the_reasoning(tiny_chats):
    chat = tiny_chats["qwen3_vl"]
    text = _texts(7)[-1]  # same_kind: two [SEG]s
    ids, labels = encode_reasoning(chat.processor, text)
    answer = chat.processor.prompts.control(f"{text.listing} {text.reasoning}") + chat.processor.prompts.end_ids
    assert ids[-len(answer):] == answer  # the answer tokenises as it does in a training example
    learned = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert learned == chat.processor.prompts.control(" " + text.reasoning) + chat.processor.prompts.end_ids
    assert learned.count(chat.processor.seg_token_id) == 2
    assert all(label in (IGNORE_INDEX, i) for i, label in zip(ids, labels))
    names = text.reasoning.split("<p>")[1:]  # "the blue square</p> [SEG] and ", "the green square</p> [SEG]."
    assert grounded_phrases(chat.processor, ids) == [chat.processor.prompts.control(name.split("</p>")[0]) for name in names]


def test_warm_up_trains_the_language_model_only(tiny_dirs, tmp_path):
    source = tiny_dirs["qwen3_vl"]
    out = warm_up_language(source, tmp_path / "language", _texts(4), steps=30, batch_size=4, lr=3e-3, log_every=10,
                           progress=False)
    log = [json.loads(line) for line in (out / WARMUP_LOG).read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20, 30]
    assert log[-1]["loss"] < log[0]["loss"] and log[-1]["token_acc"] > log[0]["token_acc"]
    assert log[-1]["phrase_acc"] > log[0]["phrase_acc"]

    before, after = load_file(source / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in before if not before[k].equal(after[k])}
    assert any(k.startswith("vlm.model.language_model.") for k in changed)
    assert any(k.startswith("vlm.lm_head.") for k in changed)
    assert all(k.startswith(("vlm.model.language_model.", "vlm.lm_head.")) for k in changed)  # no vision, no SAM2
    SegChat.from_pretrained(out)
