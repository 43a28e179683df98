"""The `python -m model.predict` command line."""

from PIL import Image

from model.predict import main
from tests.helpers import shared_path, write_image


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


def test_predict_find_writes_one_png_per_instance_and_the_overlay(tiny_dirs, tiny_sam3_dir, tmp_path, capsys):
    photo = write_image(tmp_path / "street.png", 90, 60)
    out, again = tmp_path / "out", tmp_path / "again"
    args = ["--model", str(tiny_dirs["internvl"]), "--image", str(photo), "--concepts", str(tiny_sam3_dir),
            "--find", "car", "--find", "yellow school bus"]
    assert main(args + ["--out", str(out), "--threshold", "0"]) == 0
    printed = capsys.readouterr().out
    masks = sorted(out.glob("mask_*.png"))
    assert len(masks) == 20 and printed.count("object ") == 20  # 10 queries per phrase, all above 0
    assert printed.count(": car (score") == 10 and "car × 10, yellow school bus × 10" in printed
    assert {Image.open(m).size for m in masks} == {(90, 60)}
    assert Image.open(out / "overlay.png").size == (90, 60)

    assert main(args + ["--out", str(again), "--threshold", "1"]) == 0
    captured = capsys.readouterr()
    assert not list(again.glob("mask_*.png")) and (again / "overlay.png").exists()
    assert "'car' is not in the image." in captured.err


def test_predict_find_with_unavailable_weights_says_so(tiny_dirs, tmp_path, capsys):
    photo = write_image(tmp_path / "street.png", 90, 60)
    args = ["--model", str(tiny_dirs["internvl"]), "--image", str(photo), "--concepts", str(tmp_path / "nowhere"),
            "--find", "car"]
    assert main(args) == 2
    assert "error:" in capsys.readouterr().err
