"""The miniature scaling benchmark: committed weights, exact NFE counting, row format, reproducible training."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _bench(name):
    """Import benchmarks/<name>.py under its own name, as `python benchmarks/scaling.py` would (no sys.path edit)."""
    for dep in ("_pack", "digits_models", "train_digits", "scaling"):
        if dep not in sys.modules:
            spec = importlib.util.spec_from_file_location(dep, BENCH / f"{dep}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[dep] = module
            spec.loader.exec_module(module)
        if dep == name:
            return sys.modules[dep]


dm = _bench("digits_models")
td = _bench("train_digits")
scaling = _bench("scaling")
from noise_search.search import evolutionary_search, random_search, search_over_paths, smc_search, zero_order_search  # noqa: E402


@pytest.fixture(scope="module")
def models():
    return {name: dm.load_model(name) for name in ("flow", "verifier", "evaluator")}


def test_committed_weights_load_with_expected_shapes_and_fit_the_size_cap(models):
    files = [dm.weight_path(name) for name in dm.MODELS]
    assert sum(f.stat().st_size for f in files) <= 2 * 1024 * 1024
    g = torch.Generator().manual_seed(0)
    for name, model in models.items():
        fresh = td.build(name, g).state_dict()
        loaded = model.state_dict()
        assert {k: v.shape for k, v in loaded.items()} == {k: v.shape for k, v in fresh.items()}
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in loaded.values())
    x = torch.randn((5, *dm.SHAPE), generator=g)
    assert models["flow"](x, torch.rand(5, generator=g), torch.tensor([0, 3, 9, dm.NULL_CLASS, 4])).shape == x.shape
    assert models["verifier"](x).shape == (5, dm.NUM_CLASSES)
    assert models["evaluator"](x).shape == (5, dm.NUM_CLASSES)
    assert models["evaluator"].features(x).shape == (5, dm.EvaluatorCNN.feature_dim)


def test_committed_classifiers_are_accurate_on_heldout_digits_and_settings_match_the_script(models):
    x, y = dm.load_splits()["heldout"]
    for name in ("verifier", "evaluator"):
        assert td.accuracy(models[name], x, y) > 0.93
    record = dm.load_settings()
    assert record["settings"] == json.loads(json.dumps(td.DEFAULTS))
    assert record["split_sizes"] == {k: len(v[1]) for k, v in dm.load_splits().items()}


def test_splits_are_disjoint_and_cover_the_dataset():
    from sklearn.datasets import load_digits

    splits = dm.load_splits()
    assert sum(len(y) for _, y in splits.values()) == len(load_digits().target)
    rows = {name: {tuple(r.flatten().tolist()) for r in x} for name, (x, _) in splits.items()}
    assert not rows["generator"] & rows["heldout"] and not rows["evaluator"] & rows["heldout"]
    assert all(x.min() >= -1 and x.max() <= 1 for x, _ in splits.values())


@pytest.mark.parametrize("search, config", [
    (random_search, {"n": 5}),
    (zero_order_search, {"n": 3, "rounds": 2, "step_cos": 0.9}),
    (search_over_paths, {"n": 2, "m": 3, "sigma_start": 0.7, "delta_f": 0.1, "delta_b": 0.3}),
    (smc_search, {"n": 5, "sigma_start": 0.7, "sigma_end": 0.3, "interval": 0.2, "delta_f": 0.1}),
    (evolutionary_search, {"n": 3, "generations": 3, "elite": 1, "tournament": 2, "mutation": 0.5}),
])
def test_cost_counts_every_denoiser_row_exactly(models, search, config):
    calls = []
    problem = scaling.make_problem(models, label=4, seed=11, steps=10, guidance=1.5, max_batch=4,
                                   on_call=calls.append)
    result = search(problem, **config)
    assert sum(calls) == result.nfe == result.nfe_planned
    assert max(calls) <= 4


def test_tiny_scaling_run_returns_rows_with_exactly_the_keys_within_budget(models):
    spread = []
    rows = scaling.run_benchmark(models, multiples=(1, 4), labels=(2, 7), seeds=(0, 1), steps=6, spread=spread)
    assert len(spread) == len(rows) and all(d > 0 for d in spread)
    assert [(r["method"], r["budget_nfe"]) for r in rows] == [(m, b) for b in (6, 24) for m in scaling.METHODS]
    for r in rows:
        assert tuple(r) == scaling.KEYS
        assert 0 < r["nfe_spent"] <= r["budget_nfe"]
        assert 0.0 <= r["eval_accuracy"] <= 1.0 and r["frechet"] >= 0.0 and r["seconds"] >= 0.0
    one_x = rows[:len(scaling.METHODS)]
    assert all(r["nfe_spent"] == 6 for r in one_x)
    assert len({(r["verifier_score"], r["eval_accuracy"], r["frechet"]) for r in one_x}) == 1  # all = plain sample
    random_4x = next(r for r in rows if r["method"] == "random" and r["budget_nfe"] == 24)
    assert random_4x["verifier_score"] >= one_x[0]["verifier_score"]  # best-of-4 includes candidate 0


def test_within_class_spread_measures_pairwise_distance_per_class():
    x = torch.zeros(4, *dm.SHAPE)
    x[1, 0, 0, 0] = 3.0  # class 0 pair at distance 3, class 1 pair identical
    assert scaling.within_class_spread(x, [0, 0, 1, 1]) == pytest.approx(1.5)
    assert scaling.to_image(torch.tensor([-2.0, 0.5, 2.0])).tolist() == [-1.0, 0.5, 1.0]


def test_cli_writes_json_rows(tmp_path, capsys):
    out = tmp_path / "rows.json"
    scaling.main(["--multiples", "1", "--seeds", "1", "--steps", "4", "--methods", "steps", "random",
                  "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [tuple(r) for r in rows] == [scaling.KEYS, scaling.KEYS]
    assert "verifier" in capsys.readouterr().out


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_is_bit_reproducible_from_the_seed():
    x, y = dm.load_splits()["generator"]
    flow = dict(steps=4, batch=32, lr=1e-3, label_dropout=0.2)
    a, b = _state(td.train_flow(x, y, seed=5, **flow)), _state(td.train_flow(x, y, seed=5, **flow))
    c = _state(td.train_flow(x, y, seed=6, **flow))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    clf = dict(steps=3, batch=32, lr=1e-3, weight_decay=1e-2, shift=1)
    a = _state(td.train_classifier("evaluator", x, y, seed=7, **clf))
    b = _state(td.train_classifier("evaluator", x, y, seed=7, **clf))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_does_not_touch_the_global_rng():
    x, y = dm.load_splits()["generator"]
    before = torch.random.get_rng_state()
    td.train_classifier("verifier", x, y, steps=2, batch=16, lr=1e-3, weight_decay=0.0, seed=1)
    dm.load_model("flow")
    assert torch.equal(before, torch.random.get_rng_state())


def test_frechet_distance_is_zero_for_equal_sets_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 4, generator=g).double().numpy()
    assert abs(dm.frechet_distance(a, a)) < 1e-8
    assert dm.frechet_distance(a, a + 1.0) == pytest.approx(4.0, rel=1e-6)
