"""run(), search() and its files, and the CLI: `deeparch search`, `summary --arch`,
`train --arch`."""
import importlib.util
import json
import math

import pytest
import torch

from deeparch.cli import main
from deeparch.errors import SearchError
from deeparch.search.loop import (SearchResult, arch_model_name, build_arch_model, read_arch,
                                 run, search)
from searchhelp import ToySpace, toy_score

HAS_TABLE = importlib.util.find_spec("analognasbench") is not None
needs_table = pytest.mark.skipif(not HAS_TABLE, reason="the NAS-Bench-201 table needs "
                                                       "pip install 'deeparch[search]'")
BEST201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|" \
          "nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def nb201():
    from deeparch.search.spaces import space
    return space("nb201")


@pytest.fixture(scope="module")
def synthetic(nb201):
    from deeparch.search.table import Table
    return Table.synthetic(nb201, seed=1)


@pytest.mark.parametrize("budget", [0, -3, 2.5, True, "10"])
def test_bad_budget(budget):
    with pytest.raises(SearchError, match="budget"):
        run(ToySpace(), "random", toy_score, budget)


def test_unknown_space_lists_them():
    with pytest.raises(SearchError) as e:
        run("darts", "random", toy_score, 5)
    for name in ("nb201", "nasnet", "mobile", "scaling"):
        assert name in str(e.value)


def test_result_and_history(nb201, synthetic):
    r = run(nb201, "evolution", "table", 40, seed=2,
            objective_options={"table": synthetic}, record_cost=True)
    assert isinstance(r, SearchResult) and len(r.history) == 40
    assert r.best_score == max(h["score"] for h in r.history)
    assert synthetic.accuracy(nb201.decode(r.best)) == r.best_score
    assert r.best_arch == nb201.decode(r.best)
    h = r.history[0]
    assert set(h) >= {"query", "arch", "score", "best", "wall_s", "cost"}
    assert h["cost"]["params"] > 0 and h["wall_s"] >= 0
    assert r.to_dict()["queries"] == 40


def test_hard_constraint_is_kept_and_does_not_use_the_budget(nb201, synthetic):
    cap = 50e6
    r = run(nb201, "random", "table", 12, seed=0, objective_options={"table": synthetic},
            max_macs=cap)
    assert len(r.queries) == 12
    assert all(q["cost"]["macs"] <= cap for q in r.queries)
    rejected = [h for h in r.history if "rejected" in h]
    assert rejected and all(h["cost"]["macs"] > cap and h["score"] is None for h in rejected)
    assert all(h["rejected"].startswith("macs") for h in rejected)


def test_impossible_constraint_says_the_cheapest_cost(nb201):
    with pytest.raises(SearchError) as e:
        run(nb201, "random", toy_score, 10, max_macs=7e6)
    msg = str(e.value)
    # the cheapest cell (only none/skip/pool edges) costs the skeleton's 7.78 M mult-adds
    assert "mult-adds <= 7 M" in msg and "7.783 M mult-adds" in msg and "\n" not in msg
    assert "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|" in msg


def test_rejections_in_a_row_are_bounded():
    # the toy's cheapest (coordinate descent) is feasible but the strategy only proposes
    # expensive cells: the loop gives up after max_rejects, naming what it saw
    class Stubborn(ToySpace):
        def sample(self, rng):
            return (3,) * 6
    with pytest.raises(SearchError) as e:
        run(Stubborn(), "random", toy_score, 10, max_macs=20_000, max_rejects=30)
    assert "of the last 30 tried" in str(e.value) and "cheapest had" in str(e.value)
    with pytest.raises(SearchError, match="unknown constraint"):
        run(nb201, "random", toy_score, 10, max_flops=5)


def test_search_writes_its_folder(tmp_path, nb201, synthetic):
    out = tmp_path / "s"
    results = search(nb201, ["random", "evolution"], "table", 15, seeds=3, out=out,
                     objective_options={"table": synthetic})
    assert len(results) == 6
    lines = (out / "history.jsonl").read_text().splitlines()
    assert len(lines) == 6 * 15
    rows = [json.loads(x) for x in lines]
    assert [r["query"] for r in rows[:15]] == list(range(1, 16))
    assert {r["strategy"] for r in rows} == {"random", "evolution"}
    assert {r["seed"] for r in rows} == {0, 1, 2}
    header, best = (out / "best.txt").read_text().splitlines()
    assert header == "# space: nb201"                 # the space it was searched in
    assert read_arch(str(out / "best.txt")) == best
    assert synthetic.accuracy(nb201.decode(best)) == max(r["score"] for r in rows)
    png = (out / "best_so_far.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "search.json").read_text())
    assert summary["best"] == best and len(summary["runs"]) == 6
    with pytest.raises(SearchError, match="already holds"):      # never overwritten unasked
        search(nb201, "random", "table", 5, out=out, objective_options={"table": synthetic})
    search(nb201, "random", "table", 5, out=out, force=True,
           objective_options={"table": synthetic})
    assert len((out / "history.jsonl").read_text().splitlines()) == 5


def test_search_refuses_a_file_as_folder(tmp_path, nb201, synthetic):
    f = tmp_path / "file"
    f.write_text("mine")
    with pytest.raises(SearchError, match="is a file"):
        search(nb201, "random", "table", 5, out=f, objective_options={"table": synthetic})
    assert f.read_text() == "mine"


def test_arch_model_strings(nb201, tmp_path):
    name = arch_model_name("nb201", BEST201)
    assert name == "search:nb201:" + BEST201
    net, space, arch = build_arch_model(name, num_classes=7, in_chans=1)
    assert space.encode(arch) == BEST201
    f = tmp_path / "best.txt"
    f.write_text("\n" + BEST201 + "\n")
    assert read_arch(str(f)) == BEST201
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(SearchError, match="empty"):
        read_arch(str(tmp_path / "empty.txt"))


# --------------------------------------------------------------------------- CLI

def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("deeparch: error: ")
    return err


@pytest.mark.parametrize("argv, words", [
    (["--strategy", "annealing"], ["annealing", "random", "evolution", "reinforce", "ppo",
                                   "grid"]),
    (["--objective", "accuracy"], ["accuracy", "table", "proxy", "synflow", "naswot"]),
    (["--space", "darts"], ["darts", "nb201", "nasnet", "mobile"]),
    (["--budget", "0"], ["budget"]),
    (["--budget", "-5"], ["budget"]),
    (["--max-macs", "lots"], ["--max-macs"]),
])
def test_cli_bad_input_exits_2(argv, words, capsys, tmp_path):
    rc = main(["search", *argv, "-o", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    err = _err(capsys)
    for w in words:
        assert w in err
    assert not (tmp_path / "o").exists()


def test_cli_missing_table_package(monkeypatch, capsys, tmp_path):
    import importlib.util as iu

    from deeparch.search import table as table_mod
    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec",
                        lambda name, *a: None if name == "analognasbench" else real(name, *a))
    table_mod._CACHE.clear()
    rc = main(["search", "--budget", "5", "-o", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    err = _err(capsys)
    assert "pip install 'deeparch[search]'" in err and err.count("\n") == 0


@needs_table
def test_cli_search_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["search", "--space", "nb201", "--strategy", "random,evolution",
               "--strategy", "reinforce", "--objective", "table", "--budget", "30",
               "--seeds", "2", "-o", str(out)])
    assert rc == 0
    cap = capsys.readouterr()
    assert "evolution" in cap.out and "best:" in cap.out
    assert "[6/6]" in cap.err                              # progress on stderr
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 * 30
    assert all(0 <= r["score"] <= 100 for r in rows)
    best = (out / "best.txt").read_text().strip()
    # the best arch string goes straight into summary
    rc = main(["summary", "--arch", str(out / "best.txt"), "--space", "nb201",
               "--format", "json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["total_params"] > 70_000 and d["input_size"] == [3, 32, 32]
    assert best


@needs_table
def test_cli_constrained_search(tmp_path, capsys):
    out = tmp_path / "c"
    rc = main(["search", "--strategy", "evolution", "--budget", "20", "--max-macs", "50M",
               "-o", str(out), "--no-progress", "--format", "json"])
    assert rc == 0
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    scored = [r for r in rows if r["query"]]
    assert len(scored) == 20 and all(r["cost"]["macs"] <= 50e6 for r in scored)
    rc = main(["search", "--budget", "5", "--max-params", "1k", "-o", str(tmp_path / "d"),
               "--no-progress"])
    assert rc == 2
    err = _err(capsys)
    assert "the cheapest" in err and "0.07331 M parameters" in err


def test_cli_summary_arch(capsys):
    assert main(["summary", "--arch", BEST201, "--space", "nb201"]) == 0
    text = capsys.readouterr().out
    assert "1.11" in text or "Total" in text or "params" in text.lower()
    assert main(["summary", "--arch", BEST201, "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["macs"] > 7.78e6
    # NAS-Bench-201's own notation with a bad operation: caret under it
    bad = BEST201.replace("nor_conv_1x1", "conv_5x5")
    assert main(["summary", "--arch", bad]) == 2
    err = capsys.readouterr().err
    assert "conv_5x5" in err and "^" in err
    assert main(["summary"]) == 2
    assert "--arch" in _err(capsys)
    assert main(["summary", "lenet5", "--arch", BEST201]) == 2
    assert "not both" in _err(capsys)


def test_space_specs_round_trip():
    from deeparch.search.loop import space_for_arch, space_from_spec, space_spec
    from deeparch.search.spaces import space
    assert space_spec("nb201") == "nb201"
    for sp in (space("nb201", channels=8, cells=1, stages=2),
               space("plain", stages=3, widths=(4, 8), input=(3, 16, 16)),
               space("mobile", max_phi=1, drop_rate=0.1)):
        spec = space_spec(sp)
        back = space_from_spec(spec)
        assert spec.startswith(sp.name + "(") and space_spec(back) == spec
        assert all(repr(getattr(back, k)) == repr(getattr(sp, k)) for k in sp.OPTIONS)
    assert space_spec(space("nb201", channels=8)) == "nb201(channels=8)"
    for bad in ("nb201(channels=os.system('x'))", "nb201(8)", "nb201(", "x" * 3000,
                "nb201(**{'a': 1})", "nb201(width=3)", "darts"):
        with pytest.raises(SearchError):
            space_from_spec(bad)
    # --space wins over the recorded space when they differ; the notation is the fallback
    assert space_for_arch(BEST201, "plain(stages=1)", "nb201").name == "nb201"
    assert space_for_arch(BEST201, "nb201(cells=1)", "nb201").cells == 1
    assert space_for_arch(BEST201).name == "nb201"


def test_cli_train_arch_in_a_small_skeleton(tmp_path, capsys):
    """A best.txt from a small-skeleton search trains in that skeleton, recorded with it."""
    from deeparch.search.spaces import space
    from deeparch.train.run import load_run, read_run_config
    f = tmp_path / "best.txt"
    f.write_text("# space: nb201(channels=4, cells=1)\n" + BEST201 + "\n")
    out = tmp_path / "run"
    assert main(["train", "--arch", str(f), "--data", "digits", "--epochs", "1", "--subset",
                 "60", "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    assert read_run_config(out)["model"] == "search:nb201(channels=4, cells=1):" + BEST201
    net, _ = load_run(out)
    small = space("nb201", channels=4, cells=1).build(BEST201, in_chans=1)
    assert sum(p.numel() for p in net.parameters()) == \
        sum(p.numel() for p in small.parameters()) < 20_000
    capsys.readouterr()
    f.write_text("# space: nb201(channels=__import__('os'))\n" + BEST201 + "\n")
    assert main(["summary", "--arch", str(f)]) == 2
    assert "literal values" in _err(capsys)


def test_cli_train_arch(tmp_path, capsys):
    from deeparch.train.run import load_run, read_run_config
    f = tmp_path / "best.txt"
    f.write_text(BEST201 + "\n")
    out = tmp_path / "run"
    rc = main(["train", "--arch", str(f), "--space", "nb201", "--data", "digits",
               "--epochs", "1", "--subset", "60", "--batch-size", "32", "--out", str(out),
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    cfg = read_run_config(out)
    assert cfg["model"] == "search:nb201:" + BEST201
    net, _ = load_run(out)                             # rebuilt from the recorded string
    assert sum(p.numel() for p in net.parameters()) > 70_000
    capsys.readouterr()
    assert main(["train", "lenet5", "--arch", str(f), "--data", "digits",
                 "--out", str(tmp_path / "r2")]) == 2
    assert "not both" in _err(capsys)
    assert main(["train", "lenet5", "--space", "nb201", "--data", "digits",
                 "--out", str(tmp_path / "r3")]) == 2
    assert "--arch" in _err(capsys)
    assert main(["train", "--arch", "|bogus~0|", "--data", "digits",
                 "--out", str(tmp_path / "r4")]) == 2
    assert "^" in capsys.readouterr().err


def test_scores_are_finite_in_history(nb201, synthetic):
    r = run(nb201, "reinforce", "table", 25, objective_options={"table": synthetic})
    assert all(math.isfinite(h["score"]) for h in r.history)


def test_cli_space_options_and_cost_objective(tmp_path, capsys):
    out = tmp_path / "p"
    rc = main(["search", "--space", "nb201", "-S", "channels=4", "-S", "cells=1",
               "--strategy", "random", "--objective", "params", "--budget", "4",
               "-o", str(out), "--no-progress", "--format", "json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["runs"]) == 1 and d["runs"][0]["queries"] == 4
    assert d["best_score"] < 73_306          # a smaller skeleton than the benchmark's
    assert main(["search", "-S", "bogus=1", "--budget", "2", "--no-progress"]) == 2
    err = _err(capsys)
    assert "bogus" in err and "channels" in err


def test_cli_plain_space_search_summary_train(tmp_path, capsys):
    """The plain space end to end: a proxy search under a mult-add cap writes best.txt,
    whose pattern string summary and train read back; a bad string gets a caret."""
    out = tmp_path / "plain"
    rc = main(["search", "--space", "plain", "-S", "widths=4,8", "-S", "depths=1,2",
               "--strategy", "evolution", "-s", "population=2", "-s", "sample_size=2",
               "--objective", "proxy", "--data", "digits", "--epochs", "1",
               "-O", "subset=120", "-O", "metric=loss", "--budget", "3", "--max-macs", "60k",
               "-o", str(out), "--no-progress", "--format", "json"])
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    scored = [r for r in rows if r["query"]]
    assert len(scored) == 3 and all(r["cost"]["macs"] <= 60_000 for r in scored)
    assert all(r["score"] < 0 for r in scored)             # minus a validation loss
    header, best = (out / "best.txt").read_text().splitlines()
    assert header == "# space: plain(widths=(4, 8), depths=(1, 2))"
    assert best.startswith("[CONV") and "POOL2" in best
    capsys.readouterr()
    # no --space: best.txt's header says which space (the pattern would say so too)
    assert main(["summary", "--arch", str(out / "best.txt"), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["input_size"] == [1, 8, 8] and 0 < d["macs"] <= 60_000
    run = tmp_path / "run"
    assert main(["train", "--arch", best, "--space", "plain", "--data", "digits",
                 "--epochs", "1", "--subset", "60", "--out", str(run), "--no-progress"]) == 0
    from deeparch.train.run import load_run, read_run_config
    assert read_run_config(run)["model"] == "search:plain:" + best
    run2 = tmp_path / "run2"
    assert main(["train", "--arch", str(out / "best.txt"), "--data", "digits", "--epochs",
                 "1", "--subset", "60", "--out", str(run2), "--no-progress"]) == 0
    assert read_run_config(run2)["model"] == \
        "search:plain(widths=(4, 8), depths=(1, 2)):" + best
    net, _ = load_run(run2)
    assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    capsys.readouterr()
    assert main(["summary", "--arch", "[CONV3-8 -> BN -> RELU] -> POOL9 -> [CONV3-8 -> BN -> "
                 "RELU]", "--space", "plain"]) == 2
    err = capsys.readouterr().err
    assert "joined by -> POOL2 ->" in err and "^^^^^" in err
