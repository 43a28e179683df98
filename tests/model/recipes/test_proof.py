"""The proof-of-learning recipe, run end to end at toy size: every stage runs and hands its model to the next."""
import json

from model import SegChat
from model.recipes.proof.recipe import ProofRecipe, build_proof


def test_a_toy_recipe_runs_every_stage_and_exports_a_loadable_model(tmp_path):
    recipe = ProofRecipe(n_train=7, n_heldout=2, steps=2, batch_size=2, warmup_steps=1, language_scenes=7,
                         language_warmup_steps=3, vision_warmup_steps=3)
    export = build_proof(tmp_path, recipe, progress=False)

    assert export == tmp_path / "run" / "export"
    assert len((tmp_path / "train" / "data.jsonl").read_text().splitlines()) == 7
    assert len((tmp_path / "heldout" / "data.jsonl").read_text().splitlines()) == 2
    for stage, log in (("language", "language_warmup.jsonl"), ("warmed", "vision_warmup.jsonl")):
        assert json.loads((tmp_path / stage / log).read_text().splitlines()[-1])["step"] == 3
    trained = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert trained["base_model"] == str(tmp_path / "warmed")  # the main training starts from both warm-ups
    chat = SegChat.from_pretrained(export)
    assert chat.processor.family.name == "qwen_vl"
