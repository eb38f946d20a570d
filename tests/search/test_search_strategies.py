"""Search strategies: seeded, ask/tell, exactly the budget, each doing what its paper says."""
import math
import random
import statistics

import pytest

from deeparch.errors import SearchError
from deeparch.search.loop import run
from deeparch.search.strategies import (STRATEGIES, GridSearch, RegularizedEvolution,
                                        ScalingSpace, make_strategy, scaling_grid)
from searchhelp import ToySpace, toy_optimum, toy_score


@pytest.fixture(scope="module")
def nb201():
    from deeparch.search.spaces import space
    return space("nb201")


@pytest.fixture(scope="module")
def synthetic(nb201):
    from deeparch.search.table import Table
    return Table.synthetic(nb201, seed=0)


def _table_score(table):
    return lambda space, arch: table.accuracy(arch)


SEQUENTIAL = ("random", "evolution", "reinforce", "ppo")


def test_unknown_strategy_lists_them():
    with pytest.raises(SearchError) as e:
        make_strategy("annealing", ToySpace())
    msg = str(e.value)
    assert "annealing" in msg and all(s in msg for s in STRATEGIES)
    assert msg.count("\n") == 0


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_unknown_option_and_bad_seed(name):
    with pytest.raises(SearchError, match="no option 'bogus'"):
        make_strategy(name, ToySpace(), 0, bogus=1)
    with pytest.raises(SearchError, match="seed"):
        make_strategy(name, ToySpace(), "zero")


@pytest.mark.parametrize("name", SEQUENTIAL)
@pytest.mark.parametrize("budget", [1, 7, 23])
def test_stops_exactly_at_the_budget(name, budget):
    s = make_strategy(name, ToySpace(), 3, **({"batch": 5} if name == "ppo" else {}))
    r = run(ToySpace(), s, toy_score, budget, 3)
    assert len(r.queries) == budget == len(r.history)
    assert s.asked == budget and s.told == budget
    assert [q["query"] for q in r.queries] == list(range(1, budget + 1))
    assert r.best_score == max(q["score"] for q in r.queries)
    curve = r.best_so_far()
    assert all(a <= b for a, b in zip(curve, curve[1:]))


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_seeded(name):
    def archs(seed):
        return [q["arch"] for q in run(ToySpace(), name, toy_score, 30, seed).queries]
    assert archs(5) == archs(5)
    assert archs(5) != archs(6)


def test_nb201_every_strategy_runs(nb201, synthetic):
    for name in SEQUENTIAL:
        r = run(nb201, name, _table_score(synthetic), 12, 0)
        assert len(r.queries) == 12
        assert r.best_score == synthetic.accuracy(nb201.decode(r.best))


def test_evolution_population_ages():
    space = ToySpace()
    evo = RegularizedEvolution(space, seed=1, population=4, sample_size=2)
    told = []
    for i in range(11):
        a = evo.ask()
        score = float(i)                        # each newer one better: never the oldest kept
        evo.tell(a, score)
        told.append((a, score))
    assert evo.population == told[-4:]          # the oldest died, whatever their scores


def test_evolution_keeps_a_good_old_one_only_while_young():
    space = ToySpace()
    evo = RegularizedEvolution(space, seed=0, population=3, sample_size=3)
    a = evo.ask()
    evo.tell(a, 100.0)                          # the best of all, first in
    for _ in range(5):
        evo.tell(evo.ask(), 0.0)
    assert all(s != 100.0 for _, s in evo.population)      # aged out despite its score


def test_evolution_children_are_mutants_of_the_tournament_winner():
    space = ToySpace()
    evo = RegularizedEvolution(space, seed=2, population=5, sample_size=5)
    for i in range(5):
        evo.tell(evo.ask(), float(i))
    best = max(evo.population, key=lambda m: m[1])[0]
    children = [evo.ask() for _ in range(20)]   # no tell: the population stays put
    assert all(sum(x != y for x, y in zip(c, best)) >= 1 for c in children)
    # sample size = population and sampling with replacement: mostly the best's mutants
    near = [c for c in children if sum(x != y for x, y in zip(c, best)) == 1]
    assert len(near) >= 10


def test_evolution_bad_options():
    with pytest.raises(SearchError, match="sample_size"):
        RegularizedEvolution(ToySpace(), population=3, sample_size=4)
    with pytest.raises(SearchError, match="population"):
        RegularizedEvolution(ToySpace(), population=0)


def test_evolution_and_reinforce_beat_random_on_the_toy():
    def mean_best(name, budget=120):
        return statistics.mean(run(ToySpace(), name, toy_score, budget, s).best_score
                               for s in range(12))
    rnd, evo, rl = mean_best("random"), mean_best("evolution"), mean_best("reinforce")
    assert evo > rnd + 0.5
    assert rl > rnd
    assert evo <= toy_optimum() + 1e-9


def test_reinforce_policy_moves_to_the_best_operation():
    s = make_strategy("reinforce", ToySpace(), 0, lr=0.05)
    run(ToySpace(), s, toy_score, 400, 0)
    probs = s.probabilities()
    assert len(probs) == 6 and all(abs(sum(p) - 1) < 1e-9 for p in probs)
    # conv3x3 (index 3) is the best operation on every edge of the toy score
    assert statistics.mean(p[3] for p in probs) > 0.4
    assert statistics.mean(p[0] for p in probs) < 0.1           # 'none' is the worst


def test_reinforce_survives_failed_queries():
    s = make_strategy("reinforce", ToySpace(), 0)
    for _ in range(5):
        s.tell(s.ask(), -math.inf)
    s.tell(s.ask(), 90.0)
    assert all(math.isfinite(v) for p in s.probabilities() for v in p)
    s.tell((3, 3, 3, 3, 3, 3), 99.0)             # an arch it did not ask for
    assert s.told == 7


def test_ppo_learns():
    s = make_strategy("ppo", ToySpace(), 0, batch=10, lr=0.01)
    r = run(ToySpace(), s, toy_score, 200, 0)
    first = statistics.mean(q["score"] for q in r.queries[:50])
    last = statistics.mean(q["score"] for q in r.queries[-50:])
    assert last > first + 1.0                    # the controller's samples got better
    with pytest.raises(SearchError, match="clip"):
        make_strategy("ppo", ToySpace(), 0, clip=0)


def test_ppo_emits_nasnet_tokens():
    pytest.importorskip("deeparch.search.space_nasnet", reason="the nasnet space is not built")
    from deeparch.search.spaces import space
    nasnet = space("nasnet")
    s = make_strategy("ppo", nasnet, 0, batch=4, hidden=16)
    for _ in range(8):
        a = s.ask()
        assert nasnet.from_decisions(nasnet.to_decisions(a)) == a
        s.tell(a, random.random())
    assert s.told == 8


def test_grid_points_meet_the_constraint():
    points = scaling_grid()
    assert (1.2, 1.1, 1.15) in points                   # EfficientNet's own result
    assert all(abs(a * b * b * g * g - 2) <= 0.1 + 1e-9 for a, b, g in points)
    assert all(min(p) >= 1 for p in points)
    f = [abs(a * b * b * g * g - 2) for a, b, g in points]
    assert f == sorted(f)                               # nearest to 2 first
    with pytest.raises(SearchError, match="no grid point"):
        scaling_grid(step=0.3, tol=0.0001)


def test_grid_search_on_the_scaling_space():
    space = ScalingSpace()
    g = make_strategy("grid", space)
    assert isinstance(g, GridSearch) and len(g) == space.size()

    def flops(space, arch):       # prefer the widest network that keeps FLOPS ~ 2x
        a, b, c = arch
        return b - abs(a * b * b * c * c - 2)
    r = run(space, "grid", flops, len(g), 0)
    assert len({q["arch"] for q in r.queries}) == len(g)          # each point once
    with pytest.raises(SearchError, match=f"at most {len(g)}"):
        run(space, "grid", flops, len(g) + 1, 0)
    with pytest.raises(SearchError, match="scaling"):
        make_strategy("grid", ToySpace())
    assert space.decode(space.encode((1.2, 1.1, 1.15))) == (1.2, 1.1, 1.15)
    with pytest.raises(SearchError, match="alpha=A"):
        space.decode("width=2")


def test_scaling_space_builds_efficientnet():
    import torch

    from deeparch.inspect.summary import summary
    space = ScalingSpace()
    base = (1.0, 1.0, 1.0)
    with torch.device("meta"):
        m0 = space.build(base)
        m1 = space.build((1.2, 1.1, 1.15))
    s0 = summary(m0, input_size=space.input_size(base))
    s1 = summary(m1, input_size=space.input_size((1.2, 1.1, 1.15)))
    assert 1.5 < s1.macs / s0.macs < 2.6                # ~2x FLOPS under the constraint
    assert space.input_size((1.2, 1.1, 1.15)) == (3, 258, 258)


def test_evolution_never_admits_a_failed_proposal():
    evo = RegularizedEvolution(ToySpace(), seed=0, population=3, sample_size=2)
    for i in range(3):
        evo.tell(evo.ask(), float(i))
    members = list(evo.population)
    for _ in range(5):
        evo.tell(evo.ask(), -math.inf)             # e.g. over a hard cap
    assert evo.population == members
    assert all(math.isfinite(s) for _, s in evo.population)
