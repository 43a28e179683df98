import json

import numpy as np
import pytest
from PIL import Image

from model.data import count_seg, load_jsonl
from model.data.synthetic import (COLOURS, CORNERS, TEMPLATES, area_class, generate_scenes, main, make_scene,
                                  write_jsonl)


def test_deterministic_by_seed_and_prefix_stable():
    a, b = generate_scenes(8, seed=3, size=64), generate_scenes(8, seed=3, size=64)
    for x, y in zip(a, b):
        assert (x.instruction, x.answer) == (y.instruction, y.answer)
        np.testing.assert_array_equal(x.image, y.image)
    other = generate_scenes(8, seed=4, size=64)
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a, other))
    prefix = generate_scenes(3, seed=3, size=64)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(prefix, a))


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes(10 * len(TEMPLATES), seed=1, size=64)


def test_scene_structure(scenes):
    assert {s.template for s in scenes} == set(TEMPLATES)
    for s in scenes:
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert 2 <= len(s.objects) <= 4
        assert len({(o.colour, o.shape) for o in s.objects}) == len(s.objects)  # every object nameable
        colours = [o.colour for o in s.objects]
        if s.template != "odd_colour":
            assert len(set(colours)) == len(colours)
        assert all(colours.count(s.objects[t].colour) == 1 for t in s.targets)  # targets differ in colour
        assert count_seg(s.answer) == len(s.masks) == len(s.targets)
        total = np.zeros((64, 64), int)
        for obj, mask in zip(s.objects, s.object_masks):
            assert mask.sum() > 0
            assert (s.image[mask] == COLOURS[obj.colour]).all()  # the mask is exactly the painted shape
            total += mask
        assert total.max() == 1  # no overlap
        for t, mask in zip(s.targets, s.masks):
            np.testing.assert_array_equal(mask, s.object_masks[t])


def _others(scene, exclude):
    return [o for i, o in enumerate(scene.objects) if i not in exclude]


def test_answer_names_an_object_that_fits_the_instruction(scenes):
    for s in scenes:
        target = s.objects[s.targets[0]]
        areas = [int(m.sum()) for m in s.object_masks]
        t_area = areas[s.targets[0]]
        others = _others(s, s.targets)
        other_areas = [a for i, a in enumerate(areas) if i not in s.targets]
        if s.template == "most_corners":
            assert all(CORNERS[target.shape] > CORNERS[o.shape] for o in others)
        elif s.template == "largest":
            assert t_area >= 1.5 * max(other_areas)
        elif s.template == "smallest":
            assert t_area * 1.5 <= min(other_areas)
        elif s.template == "odd_colour":
            assert len({o.colour for o in others}) == 1 and target.colour not in {o.colour for o in others}
        elif s.template == "odd_shape":
            assert len({o.shape for o in others}) == 1 and target.shape not in {o.shape for o in others}
        elif s.template == "left_of":
            anchor = next(o for o in s.objects if f"left of the {o.colour} one" in s.instruction)
            assert target.center[0] < anchor.center[0]
            assert not [o for o in others if target.center[0] < o.center[0] < anchor.center[0]]
        elif s.template == "same_kind":
            a, b = (s.objects[t] for t in s.targets)
            assert a.shape == b.shape and a.center[0] < b.center[0]
            assert a.shape not in {o.shape for o in others}
        listed = s.answer.split(".")[0].removeprefix("From left to right: ").replace(" and ", ", ").split(", ")
        assert listed == [f"a {o.described}" for o in sorted(s.objects, key=lambda o: o.center[0])]
        sized = [o for o in s.objects if o.size != "normal"]  # the listing names a size only where it decides
        assert sized == ([target] if s.template in ("largest", "smallest") else [])
        assert s.answer == f"{s.listing} {s.reasoning}"
        if s.template != "same_kind":  # the grounded phrase right before [SEG] names the target
            assert s.answer.endswith(f"<p>the {target.name}</p> [SEG].")


def test_written_jsonl_loads_back(tmp_path):
    path = write_jsonl(tmp_path / "syn", n=len(TEMPLATES) + 1, seed=5, size=64)
    samples = load_jsonl(path)
    assert len(samples) == len(TEMPLATES) + 1
    for k, sample in enumerate(samples):
        scene = make_scene(5, k, size=64)
        assert (sample.instruction, sample.answer) == (scene.instruction, scene.answer)
        assert sample.meta["template"] == scene.template
        np.testing.assert_array_equal(np.asarray(Image.open(sample.media_path)), scene.image)
        assert len(sample.masks) == len(scene.masks)
        for got, want in zip(sample.masks, scene.masks):
            np.testing.assert_array_equal(got, want)


def test_cli_writes_dataset(tmp_path, capsys):
    main([str(tmp_path), "--n", "2", "--seed", "0", "--size", "64", "--name", "train.jsonl"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "train.jsonl")
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["image"] == "images/000000.png"


def test_area_class_tells_the_size_classes_apart():
    for index in range(40):
        scene = make_scene(seed=2, index=index)
        classes = [area_class(m) for m in scene.object_masks]
        if scene.template in ("largest", "smallest"):
            assert classes[scene.targets[0]] == ("large" if scene.template == "largest" else "small")
            assert classes[:scene.targets[0]] + classes[scene.targets[0] + 1:] == ["normal"] * (len(classes) - 1)
        else:
            assert set(classes) == {"normal"}
