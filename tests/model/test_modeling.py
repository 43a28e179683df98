"""`SegChatModel.forward`: the teacher-forced loss of the one [SEG] → projector → SAM2 path."""

import pytest
import torch
import torch.nn.functional as F

from model import SegChat
from model.data.auto import load_dataset
from model.data.synthetic import write_jsonl
from model.losses import LossWeights
from model.training.examples import ExampleDataset, collate

WEIGHTS = LossWeights(ce=0.7, bce=2.0, dice=0.5)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("scenes"), 3, seed=5, size=64)


def _batch(chat, scenes, n=3):
    data = ExampleDataset(chat.processor, load_dataset(scenes))
    return collate([data[i] for i in range(n)], chat.processor)


def _by_hand(chat, batch):
    """The same loss from the public pieces, with hidden states read by `output_hidden_states` (not the hooks)."""
    model = chat.model
    inputs = batch.model_inputs(chat.device, model.vlm.dtype)
    out = model.vlm(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=inputs["labels"],
                    output_hidden_states=True, **{k: v for k, v in inputs.items() if k in
                                                   ("pixel_values", "image_grid_thw", "mm_token_type_ids")})
    final = out.hidden_states[-1]  # transformers returns the final-norm output last
    states = final[batch.input_ids == batch.seg_token_id]
    prompts = model.project(states)
    features = model.encode_image(batch.sam_pixels)
    bce = dice = torch.zeros(())
    start = 0
    for sample, targets in zip(features, batch.masks):
        decoded = model.decode_masks(sample, prompts[start:start + len(targets)])
        start += len(targets)
        k = decoded.candidates.shape[1]
        for i, target in enumerate(targets):
            for j in range(k):
                logits = model.upsample(decoded.candidates[i, j][None], tuple(target.shape))[0]
                bce = bce + F.binary_cross_entropy_with_logits(logits, target) / k
                p = logits.sigmoid()
                dice = dice + (1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)) / k
    n = sum(len(m) for m in batch.masks)
    return out.loss, bce / n, dice / n


@pytest.mark.parametrize("family", ["qwen2_5_vl", "internvl"])
def test_forward_loss_is_weighted_ce_plus_mask_losses_of_every_candidate(tiny_dirs, scenes, family):
    chat = SegChat.from_pretrained(tiny_dirs[family])
    batch = _batch(chat, scenes)
    with torch.no_grad():
        out = chat.model(**batch.model_inputs(chat.device, chat.model.vlm.dtype), loss_weights=WEIGHTS)
        ce, bce, dice = _by_hand(chat, batch)
    assert out.n_masks == sum(len(m) for m in batch.masks) > 0
    torch.testing.assert_close(out.ce, ce)
    torch.testing.assert_close(out.bce, bce, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.dice, dice, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.loss, WEIGHTS.ce * ce + WEIGHTS.bce * bce + WEIGHTS.dice * dice, atol=1e-5,
                               rtol=1e-4)
    assert out.seg_states.shape == (out.n_masks, chat.model.config.text_hidden_size)


def test_forward_without_masks_is_the_language_model_loss(tiny_dirs, scenes):
    chat = SegChat.from_pretrained(tiny_dirs["qwen3_vl"])
    inputs = _batch(chat, scenes, 2).model_inputs(chat.device, chat.model.vlm.dtype)
    for key in ("masks", "mask_valid", "sam_pixel_values"):
        inputs.pop(key)
    with torch.no_grad():
        out = chat.model(**inputs)
        reference = chat.model.vlm(**{k: v for k, v in inputs.items() if k != "seg_token_id"}).loss
    torch.testing.assert_close(out.loss, reference)
    assert out.mask_loss.item() == 0 and out.n_masks == 0


def test_forward_refuses_masks_without_as_many_seg_tokens(tiny_dirs, scenes):
    chat = SegChat.from_pretrained(tiny_dirs["qwen2_5_vl"])
    batch = _batch(chat, scenes, 1)
    batch.masks = [torch.cat([batch.masks[0], batch.masks[0]])]
    with pytest.raises(ValueError, match=r"\[SEG\] states for"):
        chat.model(**batch.model_inputs(chat.device, chat.model.vlm.dtype))
