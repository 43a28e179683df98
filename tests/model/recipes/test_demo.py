"""The offline demo model's cache: built once, reused while the recipe is the same, rebuilt when it changes."""
from pathlib import Path

import pytest

import model.recipes.proof.demo as demo


@pytest.fixture
def builds(tmp_path, monkeypatch) -> list[Path]:
    """Replace the 15-minute training by a fake that writes an empty export folder and records each build."""
    calls: list[Path] = []

    def fake_build(work, recipe, progress=True):
        calls.append(Path(work))
        export = Path(work) / "run" / "export"
        export.mkdir(parents=True)
        return export

    monkeypatch.setenv("SEGCHAT_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setattr(demo, "build_proof", fake_build)
    return calls


def test_demo_is_built_once_then_reused(builds, tmp_path):
    first = demo.demo_checkpoint(progress=False)
    assert first == tmp_path / "demo" / "run" / "export" and first.is_dir()
    assert demo.demo_checkpoint(progress=False) == first
    assert len(builds) == 1
    assert not list(tmp_path.glob("demo.building-*"))


def test_demo_from_another_recipe_is_rebuilt(builds, monkeypatch):
    demo.demo_checkpoint(progress=False)
    monkeypatch.setattr(demo, "describe_recipe", lambda recipe: {"family": "a newer recipe"})
    demo.demo_checkpoint(progress=False)
    assert len(builds) == 2


def test_unreadable_marker_means_rebuild(builds, tmp_path):
    demo.demo_checkpoint(progress=False)
    (tmp_path / "demo" / "demo.json").write_text("{not json")
    assert demo.demo_checkpoint(progress=False).is_dir()
    assert len(builds) == 2
