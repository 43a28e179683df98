"""`pip install .` installs `model`, `chat` and `prompts` (templates and the app's examples as package data) and the
console scripts."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from chat.examples import load_examples

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_the_prompts_and_runs_outside_the_source_tree(tmp_path):
    source = tmp_path / "source"  # a copy: setuptools writes its build folders beside the sources
    for name in ("model", "chat", "prompts"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("app.py", "pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, cwd=tmp_path, capture_output=True)
    wheel = next((tmp_path / "dist").glob("segchat-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"prompts/templates.json", "prompts/media.json", "prompts/system.txt", "app.py"} <= set(names)
    shipped = {f"chat/examples/{e.file.name}" for e in load_examples()} | {"chat/examples/examples.json"}
    assert shipped <= set(names)
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
    scripts = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "segchat-predict = model.predict:main" in scripts and "segchat = app:main" in scripts

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    probe = ("import model.prompting as p; assert p.__file__.startswith(%r); "
             "print(p.load_template('qwen_chat').stop); "
             "from chat.examples import load_examples; assert all(e.file.is_file() for e in load_examples())"
             % str(tmp_path / "site"))
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert "<|im_end|>" in run.stdout
