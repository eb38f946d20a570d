"""The README's main job, as written there, reaches the accuracy the README and issue promise."""
import json
import shlex
from pathlib import Path

from deeparch.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_readme_main_job_reaches_97_percent_on_digits(tmp_path, capsys):
    readme = (ROOT / "README.md").read_text()
    first = readme.split("```bash")[1].split("```")[0].strip()
    argv = shlex.split(first.split(".venv/bin/deeparch ", 1)[1])
    out = argv.index("--out")
    argv[out + 1] = str(tmp_path / "run")
    assert main(argv + ["--no-progress"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.97
    printed = capsys.readouterr().out
    assert "curves.png" in printed and "metrics.json" in printed
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
