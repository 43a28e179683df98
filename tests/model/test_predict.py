"""The `python -m model.predict` command line."""

from PIL import Image

from model.predict import main
from tests.helpers import shared_path


def test_predict_writes_an_overlay_of_the_original_size(tiny_dirs, tmp_path, capsys):
    photo = shared_path("data", "images", "truck.jpg")
    out = tmp_path / "out"
    assert main(["--model", str(tiny_dirs["qwen3_vl"]), "--image", str(photo), "--out", str(out), "Segment it."]) == 0
    printed = capsys.readouterr().out
    assert Image.open(out / "overlay.png").size == Image.open(photo).size
    masks = sorted(out.glob("mask_*.png"))
    assert printed.count("object ") == len(masks)


def test_predict_reports_a_bad_image_without_a_traceback(tiny_dirs, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["--model", str(tiny_dirs["internvl"]), "--image", str(bad), "Segment it."]) == 2
    assert "error:" in capsys.readouterr().err
