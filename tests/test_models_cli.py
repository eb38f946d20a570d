"""`deeparch models` / `info`: the committed figures table, the order, the empty answers, and
commands that import only what they use."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deeparch.cli import _human_count, main
from deeparch.models import registry

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
HEAVY = ("torch", "numpy", "matplotlib", "PIL", "sklearn", "scipy", "safetensors",
         "deeparch.inspect", "deeparch.train", "deeparch.data")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- the table

_RECOMPUTE = """
import json
from deeparch.models import registry, _figures
names = registry.builtin_models()
fresh = {n: registry.compute_entry(n) for n in names}
print(json.dumps({
    "differ": sorted(n for n in names if _figures.MODELS.get(n) != fresh[n]),
    "missing": sorted(set(names) - set(_figures.MODELS)),
    "extra": sorted(set(_figures.MODELS) - set(names)),
    "fingerprint": _figures.FINGERPRINT == registry.figures_fingerprint(_figures.SOURCES),
    "used": registry._committed() is not None,
    "sources": registry.figure_sources(), "committed_sources": list(_figures.SOURCES)}))
"""


@pytest.fixture(scope="module")
def recomputed():
    """Every built-in model's card and figures, computed afresh in a clean process."""
    r = subprocess.run([sys.executable, "-c", _RECOMPUTE], capture_output=True, text=True,
                       env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


REGENERATE = "regenerate it: python -m deeparch.models._figures"


def test_the_committed_table_equals_the_inspector_for_every_model(recomputed):
    """Exact equality, card and figures (tuples stay tuples): the table cannot go stale silently."""
    assert not recomputed["differ"], f"models/_figures.py differs for {recomputed['differ']}; {REGENERATE}"
    assert not recomputed["missing"] and not recomputed["extra"], f"{recomputed}; {REGENERATE}"


def test_the_committed_table_is_current_so_models_is_fast(recomputed):
    assert recomputed["fingerprint"] and recomputed["used"], (
        f"models/_figures.py was made from other sources, so `deeparch models` traces every "
        f"model again (seconds); {REGENERATE}")


def test_the_fingerprint_covers_every_module_that_decides_a_figure(recomputed):
    """The table hashes the files that building and summarising the zoo imports: a module
    missing from SOURCES could change a figure without making the table stale."""
    assert recomputed["sources"] == recomputed["committed_sources"], REGENERATE
    assert "models/vgg.py" in recomputed["sources"] and "inspect/summary.py" in recomputed["sources"]


def test_editing_a_source_file_makes_the_table_stale(tmp_path, monkeypatch):
    from deeparch.models import _figures
    copy = tmp_path / "deeparch"
    pkg = registry._package_root()
    family_files = [p.relative_to(pkg).as_posix() for p in (pkg / "models").glob("*.py")]
    for rel in {*_figures.SOURCES, *family_files}:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes((pkg / rel).read_bytes())
    monkeypatch.setattr(registry, "_package_root", lambda: copy)
    assert registry.figures_fingerprint(_figures.SOURCES) == _figures.FINGERPRINT
    vgg = copy / "models" / "vgg.py"
    vgg.write_text(vgg.read_text() + "\n# edited\n")
    assert registry.figures_fingerprint(_figures.SOURCES) != _figures.FINGERPRINT
    vgg.write_text(vgg.read_text().removesuffix("\n# edited\n"))
    (copy / "models" / "newfamily.py").write_text("")
    assert registry.figures_fingerprint(_figures.SOURCES) != _figures.FINGERPRINT


def test_a_stale_table_is_not_believed(monkeypatch):
    """Sources changed since the table was written: the figures are computed, not read."""
    computed = []
    real = registry.compute_entry
    monkeypatch.setattr(registry, "figures_fingerprint", lambda sources: "edited since")
    monkeypatch.setattr(registry, "compute_entry", lambda n: computed.append(n) or real(n))
    registry._committed.cache_clear()
    try:
        assert registry._committed() is None
        rows = registry.catalog("lenet5")
        assert computed == ["lenet5"] and rows[0]["params"] == 61_706
        assert registry.card_dict("lenet5") == registry.model_info("lenet5").to_dict()
    finally:
        monkeypatch.undo()
        registry._committed.cache_clear()
    assert registry._committed() is not None


def test_a_user_registered_model_is_computed_on_the_fly(capsys):
    from torch import nn

    @registry.register("zz_user_tiny", family="zz_user", paper="mine", year=2030,
                       input_size=(1, 8, 8), num_classes=3)
    def tiny(num_classes=3, in_chans=1):
        return nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, num_classes))

    try:
        from deeparch.models import _figures
        assert "zz_user_tiny" not in _figures.MODELS and registry._committed() is not None
        (row,) = registry.catalog("zz_user_*")
        assert row["params"] == (9 + 1) * 4 + 144 * 3 + 3 and row["macs"] == 36 * 4 * 9 + 144 * 3
        code, out, _ = run(capsys, "models", "--format", "json")
        rows = json.loads(out)
        assert code == 0 and rows[-1]["name"] == "zz_user_tiny"  # youngest family goes last
        code, out, _ = run(capsys, "info", "zz_user_tiny", "--format", "json")
        assert json.loads(out)["paper"] == "mine"
    finally:
        del registry._REGISTRY["zz_user_tiny"]


# --------------------------------------------------------------------------- the listing

def test_models_are_sorted_by_family_then_size(capsys):
    code, out, _ = run(capsys, "models", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == len(registry.list_models())
    fams = [r["family"] for r in rows]
    order = list(dict.fromkeys(fams))
    assert order == registry.families() and order[:3] == ["lenet", "alexnet", "googlenet"]
    assert fams == sorted(fams, key=order.index), "a family's models must be contiguous"
    first_year = {f: min(r["year"] for r in rows if r["family"] == f) for f in order}
    assert [first_year[f] for f in order] == sorted(first_year.values())
    for f in order:
        sizes = [r["params"] for r in rows if r["family"] == f]
        assert sizes == sorted(sizes), f
    # the table shows the same order, and the same keys as before in json
    code, text, _ = run(capsys, "models")
    assert [line.split()[0] for line in text.splitlines()[1:]] == [r["name"] for r in rows]
    assert set(rows[0]) == {"name", "family", "year", "input_size", "params", "macs",
                            "published_params", "published_macs"}
    vgg16 = next(r for r in rows if r["name"] == "vgg16")
    assert vgg16["params"] == 138_357_544 and vgg16["macs"] == 15_470_264_320


def test_an_empty_answer_says_so_and_exits_2(capsys):
    code, out, err = run(capsys, "models", "nosuch*")
    n = len(registry.list_models())
    assert (code, out) == (2, "")
    assert err == f"deeparch: error: no model matches 'nosuch*'; `deeparch models` lists all {n}.\n"
    code, out, err = run(capsys, "models", "res*", "--family", "vgg")
    assert code == 2 and "no vgg model matches 'res*'" in err


def test_an_unknown_family_lists_the_families(capsys):
    code, out, err = run(capsys, "models", "--family", "resnett")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("deeparch: error: unknown family 'resnett'; the families are lenet, ")
    assert all(f in err for f in registry.families())


def test_info_reads_the_table_and_says_the_same(capsys):
    for name in ("vgg16", "densenet121", "lenet5"):
        code, out, _ = run(capsys, "info", name, "--format", "json")
        assert code == 0 and json.loads(out) == json.loads(
            json.dumps(registry.model_info(name).to_dict()))
        code, out, _ = run(capsys, "info", name)
        assert out.splitlines()[0] == f"            name: {name}"
    code, out, _ = run(capsys, "info", "densenet121")
    assert "block_config': (6, 12, 24, 16)" in out  # a tuple, as the card has it
    code, out, err = run(capsys, "info", "vgg61")
    assert code == 2 and "did you mean" in err and "vgg16" in err


def test_the_cli_counts_as_the_inspector_does():
    from deeparch.inspect.render import human_count
    for n in (0, 7, 999, 1000, 61_706, 999_999, 1_000_000, 138_357_544, 15_470_264_320, 2.5e12):
        assert _human_count(n) == human_count(n), n


# --------------------------------------------------------------------------- imports

def _imported(*argv):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "deeparch", *argv],
                       capture_output=True, text=True, env=ENV, cwd=ROOT)
    names = {line.split("|")[-1].strip() for line in r.stderr.splitlines()
             if line.startswith("import time:")}
    assert "deeparch.cli" in names, r.stderr[-2000:]
    return r, names


@pytest.mark.parametrize("argv", [["--help"], ["info", "vgg16"], ["models"],
                                  ["models", "vgg*", "--format", "json"], ["train", "--help"]])
def test_light_commands_import_no_heavy_module(argv):
    r, names = _imported(*argv)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout
    assert sorted(m for m in HEAVY if m in names) == []


def test_summary_still_imports_what_it_needs():
    """The check above would pass if nothing were ever imported: a real command still loads torch."""
    r, names = _imported("summary", "lenet5", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["total_params"] == 61_706
    assert "torch" in names


def test_import_deeparch_is_lazy_and_complete():
    code = ("import sys, deeparch\n"
            "light = 'torch' not in sys.modules\n"
            "names = [n for n in deeparch.__all__ if getattr(deeparch, n) is None]\n"
            "print(light, names, deeparch.summary('lenet5').total_params, "
            "deeparch.train.__name__, 'fit' in dir(deeparch))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "[]", "61706", "deeparch.train", "True"]
    r = subprocess.run([sys.executable, "-c", "import deeparch; deeparch.nosuch"],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 1 and "has no attribute 'nosuch'" in r.stderr


def test_the_look_choices_are_the_apis():
    from deeparch import cli
    from deeparch.viz.attribution import METHODS
    from deeparch.viz.maximize import RECIPES
    assert cli._MAXIMIZE_RECIPES == RECIPES and cli._SALIENCY_METHODS == METHODS
