"""Training through the [SEG] path: losses, gradients, data encoding, checkpoint / resume / export."""
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model import SegChat
from model.data.auto import load_dataset
from model.errors import DatasetError
from model.data.sample import Sample
from model.data.synthetic import write_jsonl
from model.errors import CheckpointError
from model.training.checkpoint import list_checkpoints
from model.training.examples import ExampleDataset, collate, encode_example
from model.train import parse_args
from model.losses import LossWeights, mask_losses
from model.training.loop import TrainConfig, train
from model.training.optimizers import MaskOptimizer, param_groups
from model.training.trainable import FinetuneConfig, apply_finetuning


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("scenes"), 4, seed=3, size=64)


def _objective(path, finetune: FinetuneConfig):
    """A fine-tunable model and its training forward on a batch."""
    chat = SegChat.from_pretrained(path)
    apply_finetuning(chat.model, chat.processor.seg_token_id, finetune)
    model = chat.model.train()
    return chat, lambda batch: model(**batch.model_inputs(chat.device, model.vlm.dtype))


def _batch(chat, scenes, n=4):
    data = ExampleDataset(chat.processor, load_dataset(scenes))
    return collate([data[i] for i in range(n)], chat.processor)


def test_mask_losses_by_hand():
    logits = torch.tensor([[[4.0, -4.0], [-4.0, -4.0]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    per_pixel = np.log1p(np.exp(-4.0))  # every pixel is right with margin 4
    bce, dice = mask_losses(logits, target)
    assert bce.item() == pytest.approx(per_pixel, rel=1e-4)
    p = 1 / (1 + np.exp(-4.0))
    assert dice.item() == pytest.approx(1 - (2 * p + 1) / (p + 3 * (1 - p) + 1 + 1), rel=1e-4)
    # A wrong pixel marked ignore costs nothing; unignored it costs log(1 + e^4) of the 4 pixels' mean.
    wrong = torch.tensor([[[4.0, 4.0], [-4.0, -4.0]]])
    valid = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert mask_losses(wrong, target, valid)[0].item() == pytest.approx(per_pixel, rel=1e-4)
    assert mask_losses(wrong, target)[0].item() == pytest.approx((3 * per_pixel + np.log1p(np.exp(4.0))) / 4,
                                                                 rel=1e-4)


def test_loss_decreases_with_lora(tiny_dirs, scenes):
    torch.manual_seed(0)
    chat, objective = _objective(tiny_dirs["qwen2_5_vl"], FinetuneConfig(mode="lora", lora_dropout=0.0))
    batch = _batch(chat, scenes, 3)
    optimizer = torch.optim.AdamW([p for p in chat.model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(4):
        parts = objective(batch)
        parts.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(parts.as_floats())
    assert parts.n_masks == sum(len(s.masks) for s in load_dataset(scenes)[:3])
    for key in ("loss", "ce", "bce"):
        assert losses[-1][key] < losses[0][key], key


def _grads(model):
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("family", ["qwen2_5_vl", "internvl"])
def test_lora_gradients_reach_exactly_the_intended_parameters(tiny_dirs, scenes, family):
    chat, objective = _objective(tiny_dirs[family], FinetuneConfig(mode="lora", lora_dropout=0.0))
    objective(_batch(chat, scenes, 2)).loss.backward()
    model = chat.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name in trainable:
        assert name.startswith(("projector.", "sam2.mask_decoder.")) or "lora_" in name or "token_adapter" in name
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    touched = _grads(model)
    assert touched <= trainable
    assert any(n.startswith("projector.") for n in touched)
    assert any(n.startswith("sam2.mask_decoder.") for n in touched)
    assert any("language_model.layers" in n and "lora_B" in n for n in touched)
    # The [SEG] row of the input embedding and of the output head, and only that row.
    seg = chat.processor.seg_token_id
    for name in ("embed_tokens.token_adapter.trainable", "lm_head.token_adapter.trainable"):
        (delta,) = [p for n, p in model.named_parameters() if name in n]
        assert delta.shape[0] == 1 and delta.grad.abs().sum() > 0
    assert model.vlm.model.language_model.embed_tokens.token_adapter.token_indices["default"] == [seg]


def test_full_mode_trains_the_vision_side_only_when_asked(tiny_dirs, scenes):
    chat, objective = _objective(tiny_dirs["qwen2_5_vl"], FinetuneConfig(mode="full"))
    objective(_batch(chat, scenes, 2)).loss.backward()
    touched = _grads(chat.model)
    assert any(n.startswith("vlm.model.language_model.layers.") for n in touched)
    assert not any(n.startswith(("vlm.model.visual", "sam2.vision_encoder", "sam2.prompt_encoder")) for n in touched)
    chat, objective = _objective(tiny_dirs["qwen2_5_vl"], FinetuneConfig(mode="full", train_vision=True))
    objective(_batch(chat, scenes, 2)).loss.backward()
    touched = _grads(chat.model)
    assert any(n.startswith("vlm.model.visual") for n in touched)
    assert any(n.startswith("sam2.vision_encoder") for n in touched)
    assert not any(n.startswith("sam2.prompt_encoder") for n in touched)


def test_example_labels_cover_the_answer_only(tiny_chats, scenes):
    chat = tiny_chats["qwen2_5_vl"]
    sample = load_dataset(scenes)[0]
    example = encode_example(chat.processor, sample)
    answer = [t for t in example.labels if t != -100]
    assert answer == chat.processor.prompts.control(sample.answer) + chat.processor.prompts.end_ids
    assert example.input_ids[-len(answer):] == answer
    assert example.masks.shape == (1, 64, 64)


def test_bad_training_samples_name_the_file(tiny_chats, scenes):
    chat = tiny_chats["qwen2_5_vl"]
    good = load_dataset(scenes)[0]
    two = Sample(good.media_path, good.instruction, good.answer, good.masks * 2)
    with pytest.raises(DatasetError, match=r"000000\.png.*1 \[SEG\].*2 masks"):
        encode_example(chat.processor, two)
    small = Sample(good.media_path, good.instruction, good.answer, [np.zeros((8, 8), bool)])
    with pytest.raises(DatasetError, match=r"000000\.png.*mask size \[8, 8\]"):
        encode_example(chat.processor, small)


@pytest.mark.parametrize("separate", [False, True], ids=["one-optimizer", "separate-mask-optimizer"])
def test_train_saves_resumes_and_exports(tiny_dirs, scenes, tmp_path, separate):
    config = TrainConfig(model=str(tiny_dirs["qwen2_5_vl"]), data=[str(scenes)], out=str(tmp_path / "straight"),
                         batch_size=2, max_steps=4, save_every=2, finetune=FinetuneConfig(lora_dropout=0.0), lr=1e-3,
                         progress=False, log_every=1, export=False, separate_mask_optimizer=separate,
                         projector_lr_scale=3.0 if separate else 1.0)
    straight = train(config)
    assert [p.name for p in list_checkpoints(straight)] == ["checkpoint-2", "checkpoint-4"]
    # An interrupted run: the same folder as it was after step 2.
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoint-4")
    log = resumed / "loss_log.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:2]))
    export = train(replace(config, out=str(resumed), resume=True, export=True))

    a = load_file(str(straight / "checkpoint-4" / "trainable.safetensors"))
    b = load_file(str(resumed / "checkpoint-4" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]

    merged = SegChat.from_pretrained(export)
    base = SegChat.from_pretrained(tiny_dirs["qwen2_5_vl"])
    torch.testing.assert_close(merged.model.projector[0].weight, a["projector.0.weight"])
    q_name = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.model.vlm.state_dict()[q_name], base.model.vlm.state_dict()[q_name])
    assert not any("lora" in n or "token_adapter" in n or "modules_to_save" in n for n in merged.model.state_dict())
    # The mask decoder trained as a peft `modules_to_save` copy; the merged model holds the trained copy.
    decoder = "sam2.mask_decoder.modules_to_save.default."
    trained_decoder = {n[len(decoder):]: v for n, v in a.items() if n.startswith(decoder)}
    assert trained_decoder and not any(n.startswith("sam2.mask_decoder.original_module") for n in a)
    merged_decoder = merged.model.sam2.mask_decoder.state_dict()
    for name, value in trained_decoder.items():
        torch.testing.assert_close(merged_decoder[name], value)
    seg = merged.processor.seg_token_id
    assert not torch.equal(merged.model.get_input_embeddings().weight[seg], base.model.get_input_embeddings().weight[seg])
    reply = merged.new_conversation().ask("Segment the largest shape.", image=load_dataset(scenes)[0].media_path)
    assert isinstance(reply.text, str)


def test_resume_mid_epoch_repeats_the_uninterrupted_losses(tiny_dirs, scenes, tmp_path):
    """LoRA dropout draws from the global RNG: the checkpoint's RNG states make the resumed run draw the same masks."""
    config = TrainConfig(model=str(tiny_dirs["qwen2_5_vl"]), data=[str(scenes)], out=str(tmp_path / "straight"),
                         batch_size=1, max_steps=6, save_every=3, finetune=FinetuneConfig(lora_dropout=0.3),
                         lr=1e-3, warmup_steps=2, progress=False, log_every=1, export=False)
    straight = train(config)
    checkpoint = straight / "checkpoint-3"
    assert json.loads((checkpoint / "state.json").read_text())["batches_done"] == 3  # mid-epoch: 4 scenes
    stored = load_file(str(checkpoint / "trainable.safetensors"))
    assert all("lora_" in n or "token_adapter" in n or n.startswith(("projector.", "sam2.mask_decoder."))
               for n in stored)
    assert any(f.name.startswith("random_states_") for f in checkpoint.iterdir())
    assert not list(checkpoint.glob("model*.safetensors"))  # no copy of the whole model

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(checkpoint, resumed / "checkpoint-3")
    shutil.copy(straight / "run_config.json", resumed)
    train(replace(config, out=str(resumed), resume=True))
    losses = [json.loads(line) for line in (straight / "loss_log.jsonl").read_text().splitlines()]
    again = [json.loads(line) for line in (resumed / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in again] == [4, 5, 6]
    for a, b in zip(losses[3:], again):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["lr"] == pytest.approx(b["lr"])
    with pytest.raises(CheckpointError, match="other options"):
        train(replace(config, out=str(resumed), resume=True, max_steps=8, separate_mask_optimizer=True))


def test_mask_optimizer_steps_on_the_mask_losses_only(tiny_dirs, scenes):
    chat, objective = _objective(tiny_dirs["qwen3_vl"], FinetuneConfig(mode="full"))
    model = chat.model
    mask_optimizer = MaskOptimizer(param_groups(model, lr=1e-2, projector_lr_scale=10.0), weight_decay=0.0,
                                   warmup_steps=0, total_steps=10, max_grad_norm=1.0)
    assert [g["lr"] for g in mask_optimizer.optimizer.param_groups] == [1e-2, 1e-1]
    parts = objective(_batch(chat, scenes, 2))
    grads = mask_optimizer.take_gradients(parts.mask_loss)
    assert all(p.grad is None for p in model.parameters())  # .grad is left for the text loss
    parts.text_loss.backward()  # the graph is still there
    model.zero_grad(set_to_none=True)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask_optimizer.step(grads)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("projector.") for n in moved)
    assert any(n.startswith("sam2.mask_decoder.") for n in moved)
    assert any(n.startswith("vlm.model.language_model.layers.") for n in moved)
    assert not any(n.startswith("vlm.lm_head") for n in moved)  # only the text loss reaches the LM head


def test_separate_mask_optimizer_refuses_gradient_accumulation(tiny_dirs, scenes, tmp_path):
    config = TrainConfig(model=str(tiny_dirs["qwen2_5_vl"]), data=[str(scenes)], out=str(tmp_path / "run"),
                         grad_accum=2, separate_mask_optimizer=True, progress=False)
    with pytest.raises(ValueError, match="separate_mask_optimizer"):
        train(config)


def test_qlora_on_a_4bit_base_with_checkpointing_trains_and_exports(tiny_dirs, scenes, tmp_path):
    import bitsandbytes as bnb

    chat = SegChat.from_pretrained(tiny_dirs["qwen2_5_vl"], quantization="4bit")
    apply_finetuning(chat.model, chat.processor.seg_token_id, FinetuneConfig(lora_dropout=0.0), quantized=True)
    q_proj = chat.model.vlm.model.language_model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    chat.model.train()
    chat.model(**_batch(chat, scenes, 2).model_inputs(chat.device, chat.model.vlm.dtype)).loss.backward()
    assert q_proj.lora_B["default"].weight.grad.abs().sum() > 0

    export = train(TrainConfig(model=str(tiny_dirs["qwen2_5_vl"]), data=[str(scenes)], out=str(tmp_path / "q"),
                               quantization="4bit", gradient_checkpointing=True, max_steps=1, batch_size=2,
                               progress=False))
    merged = SegChat.from_pretrained(export)
    assert merged.model.vlm.model.language_model.layers[0].self_attn.q_proj.weight.dtype == torch.float32


def test_cli_flags_fill_the_configs():
    config, threads = parse_args(["--model", "M", "--data", "a.jsonl", "--data", "b", "c", "--out", "RUN",
                                  "--mode", "full", "--train-vision", "--max-steps", "5", "--ce-weight", "0.5",
                                  "--separate-mask-optimizer", "--no-export", "--cache", "--threads", "2"])
    assert config.data == ["a.jsonl", "b", "c"] and config.max_steps == 5 and threads == 2
    assert config.finetune == FinetuneConfig(mode="full", train_vision=True)
    assert config.weights == LossWeights(ce=0.5)
    assert config.separate_mask_optimizer and config.cache_examples and not config.export
    defaults, threads = parse_args(["--model", "M", "--data", "d", "--out", "RUN"])
    assert defaults == TrainConfig(model="M", data=["d"], out="RUN") and threads is None
    with pytest.raises(SystemExit):
        parse_args(["--model", "M", "--data", "d", "--out", "RUN", "--mode", "qlora"])
