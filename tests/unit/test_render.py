"""render_report draws real search results (toy problem) deterministically: ranked gallery, curve, lineage."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from noise_search.report import SearchReport
from noise_search.report.render import LINEAGE_H, PAD, THEMES, THUMB, final_ids, pick_ids, ranked, render_report
from noise_search.report.report import THUMB_SIZE, make_thumbs
from noise_search.search import run_search
from noise_search.tests.helpers.toys import Toy

CONFIGS = {"random": dict(n=12), "zero_order": dict(n=4, rounds=3), "paths": dict(n=2, m=3, delta_f=0.1, delta_b=0.3)}


def color(cid: int) -> tuple:
    """A distinct solid colour per candidate id, far from every theme colour."""
    return (40 + (cid * 47) % 180, 30 + (cid * 83) % 190, 20 + (cid * 29) % 200)


def search(algorithm: str, seed: int = 123):
    return run_search(algorithm, Toy(steps=20, seed=seed).problem(), **CONFIGS[algorithm])


def make_report(results: list, size: int = 32) -> SearchReport:
    images, latents = [], []
    for r in results:
        finals = [c.id for c in r.candidates if c.sigma == 0]
        images.append({i: torch.tensor(color(i), dtype=torch.float32).div(255).expand(size, size, 3).clone()
                       for i in finals})
        latents.append({i: torch.full((2, 3, 3), float(i)) for i in finals})
    return SearchReport(results, "toy", ["neg_dist", "mean"], "a toy", 0.25, images, latents)


@pytest.fixture(scope="module")
def reports() -> dict:
    return {alg: make_report([search(alg)]) for alg in CONFIGS}


def pixels(chart: torch.Tensor, rgb: tuple) -> torch.Tensor:
    """Boolean [H, W] mask of the pixels exactly equal to `rgb`."""
    img = (chart[0] * 255).round().to(torch.int16)
    return (img == torch.tensor(rgb, dtype=torch.int16)).all(-1)


@pytest.mark.parametrize("algorithm", list(CONFIGS))
def test_same_report_renders_identical_pixels(reports, algorithm):
    a = render_report(reports[algorithm])
    b = render_report(reports[algorithm])
    assert a.dtype == torch.float32 and a.ndim == 4 and a.shape[0] == 1 and a.shape[2] == 1024 and a.shape[3] == 3
    assert torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert render_report(reports[algorithm], width=700).shape[2] == 700


def test_gallery_shows_every_final_candidate_best_first(reports):
    report = reports["random"]
    result = report.results[0]
    ids = final_ids(report, 0)
    assert len({color(i) for i in ids}) == len(ids) == 12
    chart = render_report(report)
    positions = {}
    for i in ids:
        mask = pixels(chart, color(i))
        assert int(mask.sum()) >= 0.9 * THUMB ** 2, f"thumbnail of candidate {i} missing"
        ys, xs = torch.nonzero(mask, as_tuple=True)
        positions[i] = (int(ys.min()) // 50, int(xs.min()))  # row band, then column
    order = sorted(ids, key=lambda i: positions[i])
    scores = {c.id: c.score for c in result.candidates}
    assert order[0] == result.best_id
    assert [scores[i] for i in order] == sorted(scores.values(), reverse=True)
    assert [c.id for c in ranked(result, ids)] == order


def test_curve_and_baseline_are_drawn(reports):
    report = reports["zero_order"]
    t = THEMES["dark"]
    chart = render_report(report)
    curve = pixels(chart, t["curve"])
    assert int(curve.sum()) > 200, "best-score curve missing"
    baseline = pixels(chart, t["baseline"])
    assert int(baseline.sum()) > 100, "no-search baseline missing"
    rows = torch.nonzero(baseline.sum(1) > 200).flatten()
    assert len(rows) >= 1, "the baseline is a horizontal dashed line across the plot"

    no_base = dataclasses.replace(report.results[0], baseline_score=None)
    chart2 = render_report(dataclasses.replace(report, results=[no_base]))
    assert int(pixels(chart2, t["baseline"]).sum()) == 0


def test_lineage_drawn_for_zero_order_and_paths_only(reports):
    t = THEMES["dark"]
    for alg in ("zero_order", "paths"):
        chart = render_report(reports[alg])
        bottom = chart[:, -LINEAGE_H:]
        assert int(pixels(bottom, t["best"]).sum()) > 100, f"{alg}: winner lineage missing"
        assert int(pixels(bottom, t["node"]).sum()) > 100, f"{alg}: candidate nodes missing"
    zo = reports["zero_order"]
    as_random = dataclasses.replace(zo, results=[dataclasses.replace(zo.results[0], algorithm="random")])
    assert render_report(zo).shape[1] - render_report(as_random).shape[1] == LINEAGE_H + PAD


def test_picked_candidate_and_theme(reports):
    report = reports["random"]
    other = next(i for i in final_ids(report, 0) if i != report.results[0].best_id)
    plain = render_report(report)
    picked = render_report(report, picked=[other])
    assert int(pixels(plain, THEMES["dark"]["pick"]).sum()) == 0
    assert int(pixels(picked, THEMES["dark"]["pick"]).sum()) > 100
    light = render_report(report, theme="light")
    assert int(pixels(light, THEMES["light"]["bg"])[:PAD].sum()) == PAD * light.shape[2]
    assert int(pixels(plain, THEMES["dark"]["bg"])[:PAD].sum()) == PAD * plain.shape[2]


def test_batch_items_stack_vertically():
    one = make_report([search("random", 1)])
    two = make_report([search("random", 1), search("random", 2)])
    assert render_report(two).shape[1] == 2 * render_report(one).shape[1] - PAD


def test_pick_ids(reports):
    report = make_report([search("paths", 1), search("paths", 2)])
    best = [r.best_id for r in report.results]
    assert pick_ids(report, -1) == best
    finals = final_ids(report, 0)
    assert finals and all(c.sigma == 0 and c.id in report.latents[0]
                          for c in report.results[0].candidates if c.id in finals)
    assert pick_ids(report, finals[-1]) == [finals[-1], finals[-1]]
    intermediate = next(c.id for c in report.results[0].candidates if c.sigma > 0)
    with pytest.raises(ValueError, match=rf"pick={intermediate} is not a final candidate"
                                         rf".*valid ids: {finals[0]}, .*-1 for the best"):
        pick_ids(report, intermediate)
    next(c for c in report.results[1].candidates if c.id == finals[-1]).final = False
    with pytest.raises(ValueError, match="batch item 1"):
        pick_ids(report, finals[-1])


def test_bad_arguments_name_the_fix(reports):
    with pytest.raises(ValueError, match="unknown theme 'blue'; valid: dark, light"):
        render_report(reports["random"], theme="blue")
    with pytest.raises(ValueError, match="at least 320"):
        render_report(reports["random"], width=100)
    with pytest.raises(ValueError, match="no results"):
        render_report(SearchReport([], "toy"))


def test_report_json_is_json_safe(reports):
    for report in reports.values():
        data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
        item = data["items"][0]
        assert [c["id"] for c in item["candidates"]] == [c.id for c in report.results[0].candidates]
        assert item["best_id"] == report.results[0].best_id
        assert data["members"] == ["neg_dist", "mean"]


def test_thumbnails_are_small_uint8_and_the_gallery_draws_them_without_full_images():
    r = search("random")
    full = make_report([r], size=400)
    finals = final_ids(full, 0)
    thumbs = SearchReport([r], "toy", images=[{}], latents=full.latents,
                          thumbs=[{i: make_thumbs(full.images[0][i].unsqueeze(0))[0] for i in finals}])
    small = thumbs.thumbs[0][finals[0]]
    assert small.dtype == torch.uint8 and tuple(small.shape) == (THUMB_SIZE, THUMB_SIZE, 3)
    assert torch.equal(small[0, 0], torch.tensor(color(finals[0]), dtype=torch.uint8))
    drawn = render_report(thumbs)
    assert all((pixels(drawn, color(i)).sum() > 0) for i in finals[:4])


def test_a_candidate_without_a_stored_image_is_decoded_from_its_latent_when_picked():
    r = search("random")
    report = make_report([r])
    kept = r.best_id
    other = next(i for i in final_ids(report, 0) if i != kept)
    report.images = [{kept: report.images[0][kept]}]
    with pytest.raises(ValueError, match="no decoder"):
        report.image(0, other)
    report.decode = lambda latents, ids: latents[:, :1].movedim(1, -1).expand(-1, -1, -1, 3) / 100
    assert torch.equal(report.image(0, other), torch.full((3, 3, 3), other / 100))
    assert report.image(0, kept) is report.images[0][kept]
    with pytest.raises(ValueError, match="stores no latent for candidate 999"):
        report.image(0, 999)
