"""Synthetic reasoning-segmentation scenes: coloured shapes whose instruction needs one reasoning step.

Scenes are small and regular on purpose, so that a tiny randomly initialised model can learn the `[SEG]` path on
CPU: 5 shapes, 5 colours, 2-4 non-overlapping objects on a light background, 7 instruction templates (one fixed
phrasing each), answers that explain the choice and carry one `[SEG]` per target (two for `same_kind`).
Colours are unique within a scene except in `odd_colour`, where they are the point (its target's colour is still
unique): the reasoning (corners, size, kind, position) is left to the language model, and the target named in the
answer can be told apart in the pixels by its colour.
Masks are exact: the image is painted from them, without antialiasing.
Scene i depends only on (seed, i, size), so a longer run extends a shorter one with the same seed.

CLI: python -m model.data.synthetic OUT_DIR --n 2000 --seed 0 [--size 96]
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from model.media.masks import write_png_mask

CORNERS = {"circle": 0, "triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}
COLOURS = {
    "red": (215, 40, 40),
    "green": (35, 150, 60),
    "blue": (40, 80, 215),
    "yellow": (230, 190, 30),
    "purple": (135, 60, 185),
}
_BACKGROUNDS = ((238, 238, 232), (226, 232, 240), (240, 233, 222))
_NUMBER_WORDS = {3: "three", 4: "four", 5: "five", 6: "six"}
# Area of each shape per unit circumradius², used to give shapes a chosen pixel area whatever their kind.
_UNIT_AREA = {k: math.pi if n == 0 else n / 2 * math.sin(2 * math.pi / n) for k, n in CORNERS.items()}
# Object area as a fraction of the image area; the classes are far enough apart that "largest"/"smallest" is clear.
AREA_CLASSES = {"small": (0.009, 0.012), "normal": (0.025, 0.035), "large": (0.065, 0.080)}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    center: tuple[float, float]  # (x, y) in pixels
    radius: float  # circumradius in pixels
    size: str = "normal"  # an AREA_CLASSES key

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def described(self) -> str:
        """The name with its size class when that is not the usual one ("small red circle")."""
        return self.name if self.size == "normal" else f"{self.size} {self.name}"


@dataclass
class Scene:
    """An in-memory scene: RGB image, instruction, answer and one exact bool mask per `[SEG]`."""

    image: np.ndarray  # HxWx3 uint8
    instruction: str
    listing: str  # the answer's first sentence: every object, left to right (see `describe`)
    reasoning: str  # the rest of the answer, from the listing to the [SEG]s
    masks: list[np.ndarray]
    objects: list[SceneObject]
    object_masks: list[np.ndarray]  # one per object, same order
    targets: list[int]  # indices into `objects`, in [SEG] order
    template: str

    @property
    def answer(self) -> str:
        return f"{self.listing} {self.reasoning}"


# A template draws objects (shape, colour, size class) and returns, once the layout is known, the targets and text.
_Spec = list[tuple[str, str, str]]
_Finish = Callable[[list[SceneObject]], tuple[list[int], str, str]]


def _distinct(rng: np.random.Generator, pool: Sequence[str], k: int) -> list[str]:
    return [str(x) for x in rng.choice(list(pool), size=k, replace=False)]


def _most_corners(rng: np.random.Generator) -> tuple[_Spec, _Finish]:
    k = int(rng.integers(2, 5))
    spec = [(s, c, "normal") for s, c in zip(_distinct(rng, CORNERS, k), _distinct(rng, COLOURS, k))]

    def finish(objs: list[SceneObject]) -> tuple[list[int], str, str]:
        t = max(range(len(objs)), key=lambda i: CORNERS[objs[i].shape])
        shape = objs[t].shape
        return [t], "Which shape has the most corners?", (
            f"The {shape} has {_NUMBER_WORDS[CORNERS[shape]]} corners, more than any other shape: "
            f"<p>the {objs[t].name}</p> [SEG].")
    return spec, finish


def _by_size(largest: bool) -> Callable[[np.random.Generator], tuple[_Spec, _Finish]]:
    word, comparison = ("largest", "bigger") if largest else ("smallest", "smaller")

    def template(rng: np.random.Generator) -> tuple[_Spec, _Finish]:
        k = int(rng.integers(2, 5))
        spec = [(str(rng.choice(list(CORNERS))), c, "normal") for c in _distinct(rng, COLOURS, k)]
        spec[0] = (spec[0][0], spec[0][1], "large" if largest else "small")

        def finish(objs: list[SceneObject]) -> tuple[list[int], str, str]:
            return [0], f"Segment the {word} shape.", (
                f"The {objs[0].name} is {comparison} than all the other shapes, so it is the {word}: "
                f"<p>the {objs[0].name}</p> [SEG].")
        return spec, finish
    return template


def _odd_colour(rng: np.random.Generator) -> tuple[_Spec, _Finish]:
    k = int(rng.integers(3, 5))
    common, odd = _distinct(rng, COLOURS, 2)
    shapes = _distinct(rng, CORNERS, k - 1)
    spec = [(str(rng.choice(list(CORNERS))), odd, "normal")] + [(s, common, "normal") for s in shapes]

    def finish(objs: list[SceneObject]) -> tuple[list[int], str, str]:
        return [0], "Segment the shape whose colour differs from all the others.", (
            f"The other shapes are all {common}, but this one is {odd}: <p>the {objs[0].name}</p> [SEG].")
    return spec, finish


def _odd_shape(rng: np.random.Generator) -> tuple[_Spec, _Finish]:
    k = int(rng.integers(3, 5))
    common, odd = _distinct(rng, CORNERS, 2)
    colours = _distinct(rng, COLOURS, k)
    spec = [(odd, colours[0], "normal")] + [(common, c, "normal") for c in colours[1:]]

    def finish(objs: list[SceneObject]) -> tuple[list[int], str, str]:
        return [0], "Segment the shape whose kind differs from all the others.", (
            f"The other shapes are all {common}s, but this one is a {odd}: <p>the {objs[0].name}</p> [SEG].")
    return spec, finish


def _left_of(rng: np.random.Generator) -> tuple[_Spec, _Finish]:
    # Colours are assigned after layout: the anchor (a colour unique in the scene) must have a shape on its left.
    shapes = [str(s) for s in rng.choice(list(CORNERS), size=3)]
    colours = _distinct(rng, COLOURS, 3)
    anchor_rank = int(rng.integers(1, 3))  # rank by x: 1 = middle, 2 = rightmost
    spec = [(s, "", "normal") for s in shapes]

    def finish(objs: list[SceneObject]) -> tuple[list[int], str, str]:
        order = sorted(range(3), key=lambda i: objs[i].center[0])
        for rank, i in enumerate(order):
            objs[i] = replace(objs[i], colour=colours[rank])
        anchor, target = objs[order[anchor_rank]], order[anchor_rank - 1]
        return [target], f"Segment the shape just left of the {anchor.colour} one.", (
            f"The {objs[target].name} is the nearest shape on the left of the {anchor.name}: "
            f"<p>the {objs[target].name}</p> [SEG].")
    return spec, finish


def _same_kind(rng: np.random.Generator) -> tuple[_Spec, _Finish]:
    k = int(rng.integers(3, 5))
    colours = _distinct(rng, COLOURS, k)
    pair_shape, *other_shapes = _distinct(rng, CORNERS, k - 1)
    spec = [(pair_shape, colours[0], "normal"), (pair_shape, colours[1], "normal")]
    spec += [(s, c, "normal") for s, c in zip(other_shapes, colours[2:])]

    def finish(objs: list[SceneObject]) -> tuple[list[int], str, str]:
        a, b = sorted((0, 1), key=lambda i: objs[i].center[0])
        return [a, b], "Segment the two shapes of the same kind.", (
            f"Two of the shapes are {pair_shape}s: "
            f"<p>the {objs[a].name}</p> [SEG] and <p>the {objs[b].name}</p> [SEG].")
    return spec, finish


TEMPLATES: dict[str, Callable[[np.random.Generator], tuple[_Spec, _Finish]]] = {
    "most_corners": _most_corners,
    "largest": _by_size(largest=True),
    "smallest": _by_size(largest=False),
    "odd_colour": _odd_colour,
    "odd_shape": _odd_shape,
    "left_of": _left_of,
    "same_kind": _same_kind,
}


def _layout(rng: np.random.Generator, radii: list[float], size: int, min_dx: float) -> list[tuple[float, float]]:
    """Centres whose circumcircles are 2 px apart and inside the image, centre x values `min_dx` apart."""
    for _ in range(200):
        centres: list[tuple[float, float]] = []
        for r in radii:
            for _ in range(100):
                x, y = rng.uniform(r + 1, size - r - 2, size=2)
                if all(math.hypot(x - cx, y - cy) > r + cr + 2 and abs(x - cx) >= min_dx
                       for (cx, cy), cr in zip(centres, radii)):
                    centres.append((float(x), float(y)))
                    break
            else:
                break
        if len(centres) == len(radii):
            return centres
    raise RuntimeError("could not place the shapes without overlap; use a larger image size")


def _shape_mask(obj: SceneObject, size: int) -> np.ndarray:
    canvas = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    (x, y), r, n = obj.center, obj.radius, CORNERS[obj.shape]
    if n == 0:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=1)
    else:
        # Upright poses: a vertex on top for odd corner counts, a flat top for squares and hexagons.
        start = -math.pi / 2 if n % 2 else (-math.pi / 4 if n == 4 else 0.0)
        draw.polygon([(x + r * math.cos(start + 2 * math.pi * i / n), y + r * math.sin(start + 2 * math.pi * i / n))
                      for i in range(n)], fill=1)
    return np.asarray(canvas, dtype=bool)


def make_scene(seed: int, index: int, size: int = 96, template: str | None = None) -> Scene:
    """Scene `index` of the stream for `seed`; the template cycles through TEMPLATES unless given."""
    if size < 48:
        raise ValueError("size must be at least 48 pixels")
    name = template or list(TEMPLATES)[index % len(TEMPLATES)]
    rng = np.random.default_rng([seed, index])
    for _ in range(100):
        spec, finish = TEMPLATES[name](rng)
        radii = [size * math.sqrt(rng.uniform(*AREA_CLASSES[cls]) / _UNIT_AREA[shape]) for shape, _, cls in spec]
        centres = _layout(rng, radii, size, min_dx=0.12 * size if name == "left_of" else 0.0)
        objects = [SceneObject(shape, colour, c, r, cls) for (shape, colour, cls), c, r in zip(spec, centres, radii)]
        targets, instruction, reasoning = finish(objects)
        object_masks = [_shape_mask(o, size) for o in objects]
        if _clear_size_gap(name, object_masks, targets):
            break
    else:
        raise RuntimeError(f"could not draw a clear {name} scene at size {size}")

    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    if rng.random() < 0.5:  # light texture
        image = np.clip(image.astype(np.int16) + rng.integers(-8, 9, size=(size, size, 1)), 0, 255).astype(np.uint8)
    for obj, mask in zip(objects, object_masks):
        image[mask] = COLOURS[obj.colour]
    return Scene(image, instruction, describe(objects), reasoning, [object_masks[t] for t in targets], objects,
                 object_masks, targets, name)


def area_class(mask: np.ndarray) -> str:
    """The `AREA_CLASSES` entry nearest (in log area) to an object mask's share of the image."""
    share = max(float(mask.mean()), 1e-6)
    return min(AREA_CLASSES, key=lambda c: abs(math.log(share) - math.log(sum(AREA_CLASSES[c]) / 2)))


def describe(objects: Sequence[SceneObject]) -> str:
    """The scene's objects from left to right, the first sentence of every answer.

    Answers look before they reason: naming every object first gives each scene dense supervision of what is
    where, and the reasoning after it can refer back to words rather than to pixels. Every fact the reasoning
    needs is in this sentence (kind, colour, order, and size where it is not the usual one).
    """
    names = [f"a {o.described}" for o in sorted(objects, key=lambda o: o.center[0])]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"From left to right: {listed}."


def _clear_size_gap(template: str, object_masks: list[np.ndarray], targets: list[int]) -> bool:
    """For largest/smallest, the target's pixel area must differ from every other by a factor of at least 1.5.

    Area classes already differ by ~2x; this catches small shapes whose rasterised area strays at low resolution.
    """
    if template not in ("largest", "smallest"):
        return True
    areas = [int(m.sum()) for m in object_masks]
    target = areas[targets[0]]
    others = [a for i, a in enumerate(areas) if i != targets[0]]
    return target >= 1.5 * max(others) if template == "largest" else 1.5 * target <= min(others)


def generate_scenes(n: int, seed: int, size: int = 96) -> list[Scene]:
    """The first `n` scenes for `seed` (deterministic; templates balanced by cycling)."""
    return [make_scene(seed, i, size) for i in range(n)]


def write_jsonl(out_dir: str | Path, n: int, seed: int, size: int = 96, name: str = "data.jsonl") -> Path:
    """Write `n` scenes as PNG images + PNG masks and a JSONL (the format of model.data.jsonl); return its path.

    Layout: out_dir/images/{i:06d}.png, out_dir/masks/{i:06d}_{k}.png, out_dir/<name>.
    meta per line: template, targets and objects (shape, colour, center, radius), for analysis per template.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(exist_ok=True)
    jsonl_path = out_dir / name
    with jsonl_path.open("w", encoding="utf-8") as f:
        for i in range(n):
            scene = make_scene(seed, i, size)
            image_rel = f"images/{i:06d}.png"
            Image.fromarray(scene.image).save(out_dir / image_rel)
            mask_rels = []
            for k, mask in enumerate(scene.masks):
                mask_rels.append(f"masks/{i:06d}_{k}.png")
                write_png_mask(mask, out_dir / mask_rels[-1])
            meta = {"template": scene.template, "seed": seed, "index": i, "targets": scene.targets,
                    "objects": [{"shape": o.shape, "colour": o.colour, "center": list(o.center), "radius": o.radius}
                                for o in scene.objects]}
            f.write(json.dumps({"image": image_rel, "instruction": scene.instruction, "answer": scene.answer,
                                "masks": mask_rels, "meta": meta}) + "\n")
    return jsonl_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write synthetic reasoning-segmentation scenes as JSONL.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--name", default="data.jsonl", help="JSONL file name inside OUT_DIR")
    args = parser.parse_args(argv)
    print(write_jsonl(args.out_dir, args.n, args.seed, args.size, args.name))


if __name__ == "__main__":
    main()
