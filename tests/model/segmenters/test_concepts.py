"""SAM 3 concept search on tiny random models: instances, features once, batching, thresholds, exemplars, errors."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from model import CheckpointError, InputError, SegChat
from model.segmenters.concepts import ConceptOptions, ConceptPrompt, ConceptPrompts, ConceptSegmenter
from tests.helpers import write_image

EVERYTHING = ConceptOptions(score=0.0, presence=0.0)  # a random model's instances all pass
NOTHING = ConceptOptions(score=0.0, presence=1.0)  # no presence reaches 1


@pytest.fixture
def concepts(concept_chat):
    """The chat's SAM 3 with permissive thresholds, restored afterwards."""
    segmenter = concept_chat.concept_segmenter
    segmenter.options = EVERYTHING
    yield segmenter
    segmenter.options = ConceptOptions()


@pytest.fixture
def photo(tmp_path):
    return write_image(tmp_path / "photo.png", 97, 70)  # odd size, not square


def vision_calls(segmenter: ConceptSegmenter) -> list:
    calls = []
    segmenter.model.vision_encoder.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_tiny_cli_writes_a_sam3_folder_that_loads_offline(tmp_path, monkeypatch, tiny_dirs, photo):
    from model import tiny

    monkeypatch.setattr(sys, "argv", ["tiny", str(tmp_path / "s3"), "--family", "sam3"])
    tiny.main()
    assert {p.name for p in (tmp_path / "s3").iterdir()} >= {"config.json", "model.safetensors",
                                                              "processor_config.json", "tokenizer.json"}
    chat = SegChat.from_pretrained(tiny_dirs["internvl"], concepts=tmp_path / "s3")
    assert chat.concepts == tmp_path / "s3"  # lazily: nothing loaded until the first search
    reply = chat.new_conversation().find("cup", image=photo)
    assert isinstance(chat.concepts, ConceptSegmenter) and chat.concepts.model.dtype == torch.float32
    assert [s.label for s in reply.segments] and all(s.label == "cup" for s in reply.segments)


def test_instances_are_at_the_original_size_with_boxes_and_scores(concept_chat, concepts, photo):
    reply = concept_chat.new_conversation().find(["car", "yellow school bus"], image=photo)
    assert len(reply.segments) == 20  # 10 queries each, every one passing the permissive thresholds
    for segment in reply.segments:
        assert segment.found and segment.mask.shape == (70, 97) and segment.mask.dtype == bool
        x0, y0, x1, y1 = segment.box
        assert 0 <= x0 <= x1 <= 97 and 0 <= y0 <= y1 <= 70
        assert 0 <= segment.score <= 1
    cars = [s.score for s in reply.segments if s.label == "car"]
    assert cars == sorted(cars, reverse=True)
    assert reply.text == "car × 10, yellow school bus × 10" and reply.warnings == []


def test_exif_rotated_photo_gives_instances_in_display_orientation(concept_chat, concepts, tmp_path):
    stored = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 90, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    stored.save(tmp_path / "rotated.jpg", exif=exif)
    reply = concept_chat.new_conversation().find("cup", image=tmp_path / "rotated.jpg")
    assert {s.mask.shape for s in reply.segments} == {(90, 40)}


def test_vision_features_are_computed_once_across_phrases_turns_and_exemplars(concept_chat, concepts, scripted,
                                                                              photo):
    calls = vision_calls(concepts)
    conv = concept_chat.new_conversation()
    conv.find(["car", "cup"], image=photo)
    conv.find("dog")
    conv.instances(0)
    scripted(concept_chat, "It is <p>the cup</p> [SEG].<|im_end|>")
    reply = conv.ask("Where is the cup?")
    reply.segments[0].instances()
    conv.find("cat", boxes=[(1, 2, 30, 40)], negative_boxes=[(50, 10, 90, 60)])
    assert len(calls) == 1
    conv.find("cat", image=photo)  # a new image is encoded again
    assert len(calls) == 2


def test_several_phrases_batched_equal_looped(concepts, photo):
    features = concepts.encode(Image.open(photo).convert("RGB"))
    phrases = ["car", "yellow school bus", "a cup on the table"]
    outputs = []
    hook = concepts.model.register_forward_hook(lambda module, args, out: outputs.append(out))
    batched = concepts.segment(features, ConceptPrompts([ConceptPrompt(p) for p in phrases]))
    assert len(outputs) == 1  # one SAM 3 call for the three phrases
    looped = [s for p in phrases for s in concepts.segment(features, ConceptPrompts([ConceptPrompt(p)]))]
    hook.remove()
    for i in range(len(phrases)):
        for name in ("pred_masks", "pred_logits", "pred_boxes", "presence_logits"):
            torch.testing.assert_close(getattr(outputs[0], name)[i], getattr(outputs[1 + i], name)[0],
                                       atol=1e-5, rtol=0)
    assert [s.label for s in batched] == [s.label for s in looped]
    np.testing.assert_allclose([s.score for s in batched], [s.score for s in looped], atol=1e-6)
    # Masks binarised at 0.5 from equal logits (up to float noise): at most a few boundary pixels differ.
    differing = sum(int((b.mask != one.mask).sum()) for b, one in zip(batched, looped))
    assert differing <= 0.001 * sum(s.mask.size for s in batched)


def test_thresholds_decide_found_and_not_found(concept_chat, concepts, photo):
    conv = concept_chat.new_conversation()
    assert all(s.found for s in conv.find("car", image=photo).segments)
    best = max(s.score for s in conv.find("car").segments)
    above = conv.find("car", score_threshold=min(1.0, best + 1e-3))
    assert [s.found for s in above.segments] == [False] and not above.segments[0].mask.any()
    assert above.warnings == ["'car' is not in the image."] and above.text == "car: not found"
    below = conv.find("car", score_threshold=best - 1e-3)
    assert len(below.segments) >= 1 and all(s.found and s.score >= best - 1e-3 for s in below.segments)
    concepts.options = NOTHING
    absent = conv.find(["car", "cup"])
    assert [(s.label, s.found) for s in absent.segments] == [("car", False), ("cup", False)]
    assert len(absent.warnings) == 2
    assert ConceptOptions().score == 0.5 and ConceptOptions().mask == 0.5  # SAM 3's published defaults


def test_exemplar_boxes_reach_the_model_normalised_in_the_image_frame(concept_chat, concepts, photo):
    seen = {}

    def keep(module, args, kwargs):
        seen.update(boxes=kwargs["box_embeddings"].clone(), labels=kwargs["box_labels"].clone())

    hook = concepts.model.geometry_encoder.register_forward_pre_hook(keep, with_kwargs=True)
    concept_chat.new_conversation().find("car", boxes=[(10, 20, 50, 60)], negative_boxes=[(0, 0, 97, 70)],
                                         image=photo)
    hook.remove()
    w, h = 97, 70  # cx, cy, w, h divided by the ORIGINAL image size, whatever SAM 3's input size
    expected = [[30 / w, 40 / h, 40 / w, 40 / h], [48.5 / w, 35 / h, 1.0, 1.0]]
    np.testing.assert_allclose(seen["boxes"][0].numpy(), expected, atol=1e-6)
    assert seen["labels"][0].tolist() == [1, 0]


def test_instances_of_a_labelled_object_use_its_mask_box_as_exemplar(concept_chat, concepts, scripted, photo):
    boxes = []
    hook = concepts.model.geometry_encoder.register_forward_pre_hook(
        lambda m, a, kw: boxes.append(kw["box_embeddings"].clone()), with_kwargs=True)
    conv = concept_chat.new_conversation()
    scripted(concept_chat, "It is <p>the cup</p> [SEG].<|im_end|>")
    reply = conv.ask("Where is the cup?", image=photo)
    mask = reply.segments[0].mask
    found = conv.instances(0)
    hook.remove()
    assert {s.label for s in found.segments} == {"the cup"}
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    x0, y0, x1, y1 = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
    expected = [(x0 + x1) / 2 / 97, (y0 + y1) / 2 / 70, (x1 - x0) / 97, (y1 - y0) / 70]
    np.testing.assert_allclose(boxes[0][0, 0].numpy(), expected, atol=1e-6)
    assert found.segments[0].instances().segments  # instances of instances work too


def test_seg_object_with_negative_object_score_is_absent_in_ask_but_not_in_predict_forward(tiny_dirs, scripted,
                                                                                          photo, monkeypatch):
    chat = SegChat.from_pretrained(tiny_dirs["qwen3_vl"])  # its own copy: the bias is changed below
    scripted(chat, "It is <p>the red apple</p> [SEG].<|im_end|>")
    monkeypatch.setattr("model.sa2va.official.MAX_NEW_TOKENS", 4)
    # The Qwen flavours' official code also reads [SEG] states from the prompt: one object at least.
    official = {}
    official["before"] = chat.predict_forward(image=Image.open(photo), text="<image>The apple [SEG]")
    assert chat.new_conversation().ask("Where?", image=photo).segments[0].found
    with torch.no_grad():
        chat.model.sam2.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(-5.0)
    reply = chat.new_conversation().ask("Where is the apple?", image=photo)
    segment = reply.segments[0]
    assert not segment.found and segment.presence < 0 and not segment.mask.any()
    assert any("the red apple" in w and "not found" in w for w in reply.warnings)
    official["after"] = chat.predict_forward(image=Image.open(photo), text="<image>The apple [SEG]")
    before, after = (official[k]["prediction_masks"] for k in ("before", "after"))
    assert len(after) == len(before) >= 1 and any(m.any() for m in after)
    assert all(np.array_equal(a, b) for a, b in zip(after, before))  # official semantics: object score ignored


@pytest.mark.parametrize("phrases, problem", [
    ("", "empty"), ("   ", "empty"), (["car", ""], "empty"), ([], "at least one"),
    ("x" * 500, "characters"), (" ".join(["zqxj"] * 20), "too long"),
    ([f"thing {i}" for i in range(9)], "limit"),
])
def test_bad_phrases_are_clear_errors_and_the_conversation_stays_usable(concept_chat, concepts, photo, phrases,
                                                                        problem):
    conv = concept_chat.new_conversation()
    conv.find("car", image=photo)
    with pytest.raises(InputError, match=problem):
        conv.find(phrases)
    assert conv.find("car").segments


@pytest.mark.parametrize("box", [(-5, 0, 10, 10), (0, 0, 98, 10), (10, 10, 10, 20), (30, 40, 20, 50),
                                 (0, 0, float("nan"), 4), (1, 2, 3)])
def test_bad_exemplar_boxes_are_clear_errors(concept_chat, concepts, photo, box):
    conv = concept_chat.new_conversation()
    conv.find("car", image=photo)
    with pytest.raises(InputError, match="box"):
        conv.find("car", boxes=[box])
    with pytest.raises(InputError, match="exactly one phrase"):
        conv.find(["car", "cup"], boxes=[(0, 0, 5, 5)])
    assert conv.find("car").segments


def test_special_tokens_in_a_phrase_are_text(concepts, concept_chat, photo):
    tokenizer = concepts.processor.tokenizer
    ids = concepts.token_ids(["cup <|endoftext|> <|startoftext|>"])["input_ids"][0]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in ids[1:-1] and tokenizer.bos_token_id not in ids[1:-1]
    reply = concept_chat.new_conversation().find("cup <|endoftext|>", image=photo)
    assert reply.segments[0].label == "cup <|endoftext|>"


def test_concept_search_without_media_or_weights_is_a_clear_error(tiny_dirs, concept_chat, scripted, tmp_path,
                                                                  photo, monkeypatch):
    with pytest.raises(InputError, match="no image"):
        concept_chat.new_conversation().find("car")
    off = SegChat.from_pretrained(tiny_dirs["internvl"])
    conv = off.new_conversation()
    with pytest.raises(CheckpointError, match="concepts='facebook/sam3'"):
        conv.find("car", image=photo)
    assert conv.media is None  # a failed search changes nothing
    missing = SegChat.from_pretrained(tiny_dirs["internvl"], concepts=tmp_path / "no" / "such" / "folder")
    with pytest.raises(CheckpointError, match="No folder"):
        missing.new_conversation().find("car", image=photo)

    import httpx
    from huggingface_hub.errors import GatedRepoError

    def refuse(*args, **kwargs):  # what the hub answers a user who has not been granted access
        request = httpx.Request("GET", "https://huggingface.co/api/models/facebook/sam3")
        raise GatedRepoError("403 Forbidden: access to model facebook/sam3 is restricted",
                             response=httpx.Response(403, request=request))

    monkeypatch.setattr("huggingface_hub.snapshot_download", refuse)
    gated = SegChat.from_pretrained(tiny_dirs["internvl"], concepts="facebook/sam3")
    conv = gated.new_conversation()
    with pytest.raises(CheckpointError) as err:
        conv.find("car", image=photo)
    message = str(err.value)
    assert "gated" in message and "huggingface.co/facebook/sam3" in message and "local folder" in message
    scripted(gated, "It is <p>the cup</p> [SEG].<|im_end|>")
    assert conv.ask("Where is the cup?", image=photo).segments  # everything else keeps working


def test_a_detector_only_checkpoint_says_videos_need_the_full_one(concept_chat, concepts, scripted):
    frames = [Image.fromarray(np.full((32, 48, 3), 40 * i, np.uint8)) for i in range(3)]
    conv = concept_chat.new_conversation()
    scripted(concept_chat, "It is <p>the cup</p> [SEG].<|im_end|>")
    conv.ask("Where is the cup?", video=frames)
    with pytest.raises(InputError, match="detector only.*full checkpoint"):
        conv.find("cup")
    with pytest.raises(InputError, match="detector only"):
        conv.instances(0)
    assert conv.ask("And now?").text  # the conversation goes on
