"""Seed racing in ComfyUI: every finisher equals the stock KSampler with seed + id (multistep history and ancestral
noise carried across the rungs), results do not depend on batch_size, NFEs are counted exactly, the `seed` output
reproduces the winner, and bad racing settings name their input."""

from __future__ import annotations

import pytest

from noise_search.tests.helpers.comfy_script import run_in_comfyui

pytestmark = pytest.mark.comfyui

SAMPLERS = ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "heun", "uni_pc")

BODY = r'''
empty = {"samples": torch.zeros(1, 16, 8, 8)}
RACE = dict(algorithm="racing", candidates=6, race_eta=2, race_rungs="0.75, 0.5", steps=8)
for name in __SAMPLERS__:
    runs = {}
    for b in (1, 3, 6):
        lat, img, topk, noise, report, seed_out = search(empty, 50, name, batch_size=b, **RACE)
        r = report.results[0]
        finals = sorted(c.id for c in r.candidates if c.final)
        runs[b] = (lat["samples"], r, finals, seed_out, report)
    lat, r, finals, seed_out, report = runs[1]
    plain = search(empty, 50, name, batch_size=1, candidates=6, steps=8)[4]
    out[name] = {
        "random": [max_diff(report.latents[0][i], plain.latents[0][i]) for i in finals],
        "stock": [max_diff(report.latents[0][i], stock(empty, 50 + i, name, steps=8)) for i in finals],
        "seed": [seed_out, 50 + r.best_id, max_diff(lat[0], stock(empty, seed_out, name, steps=8)[0])],
        "nfe": [r.nfe, r.nfe_planned],
        "dropped": sorted((c.id, c.extra.get("dropped_at")) for c in r.candidates if not c.final),
        "batched": [[runs[b][2] == finals, runs[b][1].best_id == r.best_id,
                     max(max_diff(runs[b][4].latents[0][i], report.latents[0][i]) for i in finals)] for b in (3, 6)],
        "drift": [n for n in report.all_notes() if "drifted" in n],
    }
# the recorded model outputs spill to a temporary file past their RAM budget: the same race, said in the notes
import noise_search.nodes.guider_bridge as bridge
budget, bridge.RECORD_RAM = bridge.RECORD_RAM, 0
spilled = search(empty, 50, "euler_ancestral", batch_size=3, **RACE)[4]
bridge.RECORD_RAM = budget
in_ram = search(empty, 50, "euler_ancestral", batch_size=3, **RACE)[4]
out["spill"] = [sorted(spilled.latents[0]) == sorted(in_ram.latents[0]),
                max(max_diff(spilled.latents[0][i], in_ram.latents[0][i]) for i in in_ram.latents[0]),
                [n for n in spilled.all_notes() if "recorded model outputs" in n],
                [n for n in in_ram.all_notes() if "recorded model outputs" in n]]
random_nfe = search(empty, 50, "heun", steps=8, candidates=1)[4].results[0].nfe
out["unit_heun"] = random_nfe

# The seed output of a non-plain winner: the seed its lineage started from, and the notes say so.
lat, img, topk, noise, report, seed_out = search(empty, 60, "euler", algorithm="paths", candidates=2)
r = report.results[0]
best = next(c for c in r.candidates if c.id == r.best_id)
out["paths_seed"] = [seed_out, 60 + best.root, best.kind, best.plain,
                     [n for n in report.all_notes() if "seed output" in n]]

out["errors"] = {
    "rungs": error(lambda: search(empty, 1, "euler", algorithm="racing", race_rungs="0.99")),
    "eta": error(lambda: search(empty, 1, "euler", algorithm="racing", race_eta=1)),
    "budget": error(lambda: search(empty, 1, "euler", algorithm="racing", budget_nfe=3)),
}
'''.replace("__SAMPLERS__", repr(SAMPLERS))


@pytest.fixture(scope="module")
def result(tiny_sd3_dir) -> dict:
    return run_in_comfyui(BODY, tiny_sd3_dir)


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_finisher_is_the_stock_ksampler_with_seed_plus_id(result, name):
    assert result[name]["random"] == [0.0] * 2  # 6 -> 3 -> 2 finishers, each Random's candidate bit for bit
    seed_out, expected, diff = result[name]["seed"]
    assert seed_out == expected
    assert result[name]["drift"] == []
    if name == "uni_pc":  # stock uni_pc writes 0.001 into its own last sigma: ~0.1 % off on flow models (README)
        assert max(result[name]["stock"]) < 5e-3 and diff < 5e-3
    else:
        assert result[name]["stock"] == [0.0] * 2 and diff == 0.0


@pytest.mark.parametrize("name", SAMPLERS)
def test_the_bracket_and_results_do_not_depend_on_batch_size(result, name):
    assert sorted(d for _, d in result[name]["dropped"]) == [1, 1, 1, 2]
    for same_finishers, same_winner, diff in result[name]["batched"]:
        assert same_finishers and same_winner
        assert diff < 1e-4  # batched matmuls round differently (as for Random); the noise is identical


def test_racing_spends_its_plan_in_real_model_calls(result):
    assert result["euler"]["nfe"] == [6 * 2 + 3 * 2 + 2 * 4] * 2
    unit = result["unit_heun"]  # heun: 2 calls a step, 1 on the last
    assert unit == 2 * 8 - 1
    assert result["heun"]["nfe"] == [6 * 4 + 3 * 4 + 2 * (unit - 8)] * 2


def test_a_non_plain_winner_gives_its_lineage_seed_and_says_so(result):
    seed_out, root_seed, kind, plain, notes = result["paths_seed"]
    assert kind == "path" and not plain and seed_out == root_seed
    assert len(notes) == 1 and "no plain seed" in notes[0] and "use the latent output" in notes[0]


@pytest.mark.parametrize("case, needles", [
    ("rungs", ["Noise Search Sampler:", "race_rungs", "step(s) [0] of 4"]),
    ("eta", ["Noise Search Sampler:", "race_eta", ">= 2"]),
    ("budget", ["Noise Search Sampler:", "budget_nfe=3", "racing"]),
])
def test_bad_racing_settings_name_their_input(result, case, needles):
    message = result["errors"][case]
    assert message is not None, f"{case} did not raise"
    for needle in needles:
        assert needle in message, message


def test_recorded_outputs_past_their_ram_budget_spill_to_a_file_and_change_nothing(result):
    same_finishers, diff, spilled_notes, in_ram_notes = result["spill"]
    assert same_finishers and diff == 0.0
    assert len(spilled_notes) == 1 and "temporary file" in spilled_notes[0] and in_ram_notes == []
