"""End-to-end parity with the official Sa2VA code: every oracle under ../shared/oracle, loaded with
`SegChat.from_pretrained(folder)` (converted on load, fp32, CPU), every case of its cases.json through
`predict_forward`. Tolerances are the oracle READMEs' (§7)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model import SegChat
from model.errors import CheckpointError
from model.sa2va.official import OfficialOutput, predict_forward
from tests.helpers import SHARED, shared_path

pytestmark = pytest.mark.slow

# Oracles in ../shared/oracle, and those built into the repository's test data by tests/fixtures/make_*_oracle.py.
FIXTURE_ORACLES = Path(__file__).resolve().parents[2] / "fixtures" / "oracle"
ORACLE_DIRS = {p.parent.name: p.parent for root in (SHARED / "oracle", FIXTURE_ORACLES)
               for p in sorted(root.glob("*/cases.json"))}
ORACLES = sorted(ORACLE_DIRS)
CASES = [(name, case["name"]) for name in ORACLES
         for case in json.loads((ORACLE_DIRS[name] / "cases.json").read_text())["cases"]]
SEG_CASES = [(name, case) for name, case in CASES
             if list((ORACLE_DIRS[name] / "reference" / case).glob("seg_hidden_states.np*"))]


def _array(path: Path) -> np.ndarray:
    if path.suffix == ".npz":
        with np.load(path) as z:
            return z[z.files[0]]
    return np.load(path)


class Oracle:
    """One oracle folder: its SegChat (loaded once) and each case's official-call output (computed once)."""

    def __init__(self, name: str):
        self.folder = ORACLE_DIRS[name]
        self.cases = {c["name"]: c for c in json.loads((self.folder / "cases.json").read_text())["cases"]}
        self.chat = SegChat.from_pretrained(self.folder, device="cpu", dtype="fp32")
        self._encode = self.chat.segmenter.encode
        self._features: dict = {}
        self.chat.segmenter.encode = self._cached_encode  # follow-ups re-send the same image
        self._outputs: dict[str, OfficialOutput] = {}

    def _cached_encode(self, image: Image.Image):
        key = (image.size, image.tobytes())
        if key not in self._features:
            self._features[key] = self._encode(image)
        return self._features[key]

    def output(self, name: str) -> OfficialOutput:
        if name not in self._outputs:
            case = self.cases[name]
            image = Image.open(self.folder / case["image"]) if case.get("image") else None
            video = [Image.open(self.folder / p) for p in case["video"]] if case.get("video") else None
            with torch.no_grad():
                self._outputs[name] = predict_forward(self.chat.model, self.chat.processor, image=image, video=video,
                                                      text=case["text"], past_text=case["past_text"],
                                                      segmenter=self.chat.segmenter)
        return self._outputs[name]

    def reference(self, name: str, *stems: str) -> np.ndarray | None:
        """The first reference array of the case named by one of `stems` (.npy or .npz), or None."""
        for stem in stems:
            for suffix in (".npy", ".npz"):
                path = self.folder / "reference" / name / (stem + suffix)
                if path.exists():
                    return _array(path)
        return None


@pytest.fixture(scope="module")
def oracles(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("SEGCHAT_CACHE", str(tmp_path_factory.mktemp("converted")))
    loaded: dict[str, Oracle] = {}

    def get(name: str) -> Oracle:
        if name not in loaded:
            loaded[name] = Oracle(name)
        return loaded[name]

    yield get
    patch.undo()


def test_oracles_are_discovered():
    shared_path("oracle")
    assert ORACLES, "no oracle folder with a cases.json"


@pytest.mark.parametrize("oracle,case", CASES)
def test_prompt_ids_and_answer(oracles, oracle, case):
    o = oracles(oracle)
    out = o.output(case)
    expected_prompt = o.reference(case, "prompt_input_ids", "input_ids")
    if expected_prompt is not None:
        assert out.prompt_ids == expected_prompt.reshape(-1).tolist()
    assert out.generated_ids == o.cases[case]["expected_generated_ids"]
    assert out.prediction == o.cases[case]["expected_prediction"]


@pytest.mark.parametrize("oracle,case", SEG_CASES)
def test_seg_states_and_embeddings(oracles, oracle, case):
    o = oracles(oracle)
    out = o.output(case)
    states = o.reference(case, "seg_hidden_states")
    embeds = o.reference(case, "seg_embeds", "seg_embeddings_after_text_hidden_fcs")
    with torch.no_grad():
        projected = o.chat.model.projector(out.seg_states).numpy()
    errors = {"state": np.abs(out.seg_states.numpy() - states).max(), "embedding": np.abs(projected - embeds).max()}
    assert max(errors.values()) <= 1e-4, errors
    np.testing.assert_allclose(out.seg_states.numpy(), states, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(projected, embeds, atol=1e-4, rtol=1e-4)


def _reference_low_res(o: Oracle, case: str, n_seg: int, frames: int) -> dict[int, np.ndarray]:
    """{frame: [n_seg, h, w]} of SAM2's selected low-res logits, whatever the oracle's file layout ({} when the
    oracle keeps only the logits at the original size)."""
    full = o.reference(case, "sam2_lowres_mask_logits")
    if full is not None:
        if full.shape[:2] != (n_seg, frames):  # Qwen oracles store [frames, n_seg, h, w]
            full = full.swapaxes(0, 1)
        return {t: full[:, t] for t in range(frames)}
    path = next((o.folder / "reference" / case).glob("sam2_lowres_mask_logits_frames_*.npy"), None)
    if path is None:
        return {}
    listed = [int(t) for t in path.stem.split("frames_")[1].split("_")]
    return {t: arr for t, arr in zip(listed, np.load(path).swapaxes(0, 1))}


@pytest.mark.parametrize("oracle,case", CASES)
def test_masks(oracles, oracle, case):
    o = oracles(oracle)
    spec = o.cases[case]
    out = o.output(case)
    if "expected_masks" not in spec:
        assert out.masks == []  # the text-only branch returns no masks
        return
    expected = _array(o.folder / spec["expected_masks"])
    logits = _array(o.folder / spec["expected_mask_logits"]).reshape(expected.shape)
    got = np.stack(out.masks)
    assert got.dtype == bool and got.shape == expected.shape
    n_seg, frames = expected.shape[:2]
    atol = 2e-3 if spec.get("video") else 1e-3
    for t, ref in _reference_low_res(o, case, n_seg, frames).items():
        np.testing.assert_allclose(out.low_res_logits[:, t], ref, atol=atol, rtol=0,
                                   err_msg=f"low-res logits of frame {t}")
    sure = np.abs(logits) >= 1e-3
    assert (got[sure] == expected[sure]).all(), f"{int((got != expected)[sure].sum())} confident pixels differ"


def test_predict_forward_returns_the_official_dict(oracles):
    o = oracles(ORACLES[0])
    name = next(n for n, c in o.cases.items() if c.get("image") and not c["past_text"])
    case = o.cases[name]
    result = o.chat.predict_forward(image=Image.open(o.folder / case["image"]), text=case["text"])
    assert set(result) == {"prediction", "prediction_masks"}
    assert result["prediction"] == case["expected_prediction"]
    assert [m.shape for m in result["prediction_masks"]] == [m.shape for m in o.output(name).masks]


def test_convert_cli_output_loads_natively(oracles, tmp_path):
    from model.sa2va.convert.__main__ import main

    o = oracles(ORACLES[0])
    dst = tmp_path / "native"
    main([str(o.folder), str(dst), "--shard-size-gb", "0.01"])
    config = json.loads((dst / "config.json").read_text())
    assert config["model_type"] == "segchat" and "auto_map" not in config
    assert "auto_map" not in json.loads((dst / "tokenizer_config.json").read_text())
    assert len(list(dst.glob("model-*-of-*.safetensors"))) > 1
    native = SegChat.from_pretrained(dst, device="cpu", dtype="fp32")
    assert native.model.config.family == o.chat.model.config.family
    reference = o.chat.model.state_dict()
    assert all(torch.equal(t, reference[k]) for k, t in native.model.state_dict().items())
    name = next(n for n, c in o.cases.items() if not c.get("image") and not c.get("video"))
    case = o.cases[name]
    result = native.predict_forward(text=case["text"], past_text=case["past_text"])
    assert result == {"prediction": case["expected_prediction"], "prediction_masks": []}


def test_pickle_only_native_checkpoint_needs_allow_pickle(tiny_dirs, tmp_path):
    from model.modeling import SegChatModel

    folder = tmp_path / "pickled"
    source = tiny_dirs["internvl"]
    folder.mkdir()
    model = SegChatModel.from_pretrained(source)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    for path in source.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "chat_template", "preprocessor")):
            shutil.copyfile(path, folder / path.name)
    assert not list(folder.glob("*.safetensors"))
    with pytest.raises(CheckpointError, match="pickle"):
        SegChat.from_pretrained(folder)
    assert SegChat.from_pretrained(folder, allow_pickle=True).model.config.family == "internvl"


def test_pickle_only_sa2va_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    source = ORACLE_DIRS[ORACLES[0]]
    shutil.copyfile(source / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="pickle"):
        SegChat.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="safetensors only"):  # opted in, but the converter needs safetensors
        SegChat.from_pretrained(folder, allow_pickle=True)
