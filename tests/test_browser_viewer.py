"""The Score Viewer in the real frontend: headless Chromium (Debian's package, driven by Playwright) loads an example
workflow on the tiny models, queues it, and the node shows the scores, the curve and the gallery; clicking a
candidate sets `pick`, and the next run outputs that candidate without sampling again.

Screenshots (dark and light theme) go to test-artifacts/score_viewer*.png.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from noise_search.search.render import fmt_score
from noise_search.tests.e2e_harness import REPO_ROOT, comfy_env, tiny_sd3_dir  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WORKFLOW = REPO_ROOT / "example_workflows" / "sd15_txt2img_clipscore_aesthetic.json"
ARTIFACTS = REPO_ROOT / "test-artifacts"
CANDIDATES = 6

# Shrinks the loaded example to the tiny models by widget name, then parks the viewer at the top left at 100%.
SETUP = """async ({ workflow, ckpt, models, candidates }) => {
  const app = window.comfyAPI.app.app;
  await app.loadGraphData(workflow);
  let viewer = null;
  for (const node of app.graph._nodes) {
    const set = (name, value) => { const w = node.widgets?.find((w) => w.name === name); if (w) w.value = value; };
    const get = (name) => node.widgets?.find((w) => w.name === name)?.value;
    switch (node.comfyClass) {
      case "CheckpointLoaderSimple": set("ckpt_name", ckpt); break;
      case "EmptyLatentImage": case "EmptySD3LatentImage": set("width", 64); set("height", 64); set("batch_size", 1); break;
      case "NoiseSearchVerifierLoader": set("model", models[get("kind")]); set("device", "cpu"); break;
      case "NoiseSearchSampler": set("steps", 3); set("candidates", candidates); set("budget_nfe", 0); break;
      case "NoiseSearchScoreViewer": viewer = node; break;
    }
  }
  const right = Math.max(...app.graph._nodes.filter((n) => n !== viewer).map((n) => n.pos[0] + n.size[0]));
  viewer.pos = [right + 200, 0];
  viewer.setSize([680, viewer.size[1]]);
  app.canvas.ds.scale = 1;
  app.canvas.ds.offset = [-viewer.pos[0] + 80, 110];
  app.graph.setDirtyCanvas(true, true);
  window.__viewer = viewer;
  return viewer.id;
}"""

VIEWER_STATE = """() => {
  const node = window.__viewer, root = node.noiseSearchViewer.root;
  return {
    pick: node.widgets.find((w) => w.name === "pick").value,
    data: node.noiseSearchViewer.data,
    head: root.querySelector(".ns-head")?.textContent ?? "",
    thumbs: [...root.querySelectorAll(".ns-thumb")].map((t) => ({ id: Number(t.dataset.id), text: t.textContent,
      picked: t.classList.contains("ns-picked"), best: t.classList.contains("ns-best") })),
    rows: root.querySelectorAll(".ns-table tbody tr").length,
    headers: [...root.querySelectorAll(".ns-table th")].map((th) => th.textContent),
    curve: root.querySelector(".ns-curve-line")?.getAttribute("d") ?? "",
    baseline: !!root.querySelector(".ns-baseline"),
    imagesLoaded: [...root.querySelectorAll(".ns-thumb img")].every((i) => i.complete && i.naturalWidth > 0),
    background: getComputedStyle(root).backgroundColor,
  };
}"""


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def post_settings(url: str, settings: dict) -> None:
    """Store frontend settings for the default user before the page loads (no first-run template browser)."""
    req = urllib.request.Request(f"{url}/settings", data=json.dumps(settings).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).close()


def latest_history(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/history?max_items=1", timeout=30) as resp:
        (entry,) = json.loads(resp.read()).values()
    return entry


NODE_RECT = """() => {
  const app = window.comfyAPI.app.app, node = window.__viewer, ds = app.canvas.ds;
  app.canvas.deselectAll?.();
  app.graph.setDirtyCanvas(true, true);
  const r = app.canvas.canvas.getBoundingClientRect(), title = window.LiteGraph.NODE_TITLE_HEIGHT;
  return { x: r.left + (node.pos[0] + ds.offset[0]) * ds.scale, y: r.top + (node.pos[1] - title + ds.offset[1]) * ds.scale,
           width: node.size[0] * ds.scale, height: (node.size[1] + title) * ds.scale };
}"""


def screenshot(page, name: str) -> Path:
    """The viewer node with a small margin."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    rect = page.evaluate(NODE_RECT)
    page.wait_for_timeout(200)
    clip = {"x": max(0, rect["x"] - 12), "y": max(0, rect["y"] - 12), "width": rect["width"] + 24, "height": rect["height"] + 24}
    page.screenshot(path=str(path), clip=clip)
    return path


def test_viewer_shows_the_search_and_click_picks(browser, comfy_env):  # noqa: F811
    page = browser.new_page(viewport={"width": 1500, "height": 1500})
    errors = []
    page.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack}"))
    post_settings(comfy_env.server.url, {"Comfy.TutorialCompleted": True, "Comfy.ColorPalette": "dark",
                                         "Comfy.Workflow.ShowMissingModelsWarning": False})
    page.goto(comfy_env.server.url)
    page.wait_for_function("() => !!(window.comfyAPI?.app?.app?.graph && window.LiteGraph?.registered_node_types?.NoiseSearchScoreViewer)",
                           timeout=120_000)
    viewer_id = page.evaluate(SETUP, {"workflow": json.loads(WORKFLOW.read_text()), "ckpt": comfy_env.checkpoint,
                                      "models": comfy_env.verifier_models, "candidates": CANDIDATES})
    page.evaluate("() => window.comfyAPI.app.app.queuePrompt(0, 1)")
    page.wait_for_function("() => !!window.__viewer.noiseSearchViewer.data", timeout=300_000)
    page.wait_for_function(f"() => ({VIEWER_STATE})().imagesLoaded", timeout=60_000)
    state = page.evaluate(VIEWER_STATE)

    item = state["data"]["items"][0]
    finals = [c for c in item["candidates"] if c["sigma"] == 0]
    assert len(finals) == CANDIDATES and state["pick"] == -1
    assert f"best id {item['best_id']} = {fmt_score(item['best_score'])}" in state["head"]
    assert state["curve"].startswith("M") and state["baseline"]
    assert len(state["thumbs"]) == CANDIDATES and state["rows"] == CANDIDATES
    assert state["thumbs"][0]["id"] == item["best_id"] and state["thumbs"][0]["best"]
    ranked = sorted(finals, key=lambda c: (-c["score"], c["id"]))
    assert [t["id"] for t in state["thumbs"]] == [c["id"] for c in ranked]
    for thumb, cand in zip(state["thumbs"], ranked):
        assert fmt_score(cand["score"]) in thumb["text"]
        for name, score in cand["members"].items():
            assert f"{name}{fmt_score(score)}" in thumb["text"]
    members = state["data"]["members"]
    assert len(members) == 2 and all(any(m in h for h in state["headers"]) for m in members)

    page.hover(".ns-viewer .ns-curve svg", position={"x": 200, "y": 60})
    tip = page.locator(".ns-viewer .ns-tip")
    assert tip.is_visible() and "NFE" in tip.text_content() and "best" in tip.text_content()
    dark = screenshot(page, "score_viewer.png")

    page.select_option(".ns-viewer select.ns-sort", "id")
    by_id = page.evaluate(VIEWER_STATE)["thumbs"]
    assert [t["id"] for t in by_id] == sorted(c["id"] for c in finals)

    other = next(c["id"] for c in ranked if c["id"] != item["best_id"])
    page.click(f".ns-viewer .ns-thumb[data-id='{other}']")
    state = page.evaluate(VIEWER_STATE)
    assert state["pick"] == other
    assert [t["id"] for t in state["thumbs"] if t["picked"]] == [other]

    page.evaluate("() => window.comfyAPI.app.app.queuePrompt(0, 1)")
    page.wait_for_function(f"() => window.__viewer.noiseSearchViewer.data.pick === {other}", timeout=300_000)
    state = page.evaluate(VIEWER_STATE)
    assert state["data"]["picked"] == [other]
    cached = next((data["nodes"] for name, data in latest_history(comfy_env.server.url)["status"]["messages"]
                   if name == "execution_cached"), [])
    sampler = next(n["id"] for n in json.loads(WORKFLOW.read_text())["nodes"] if n["type"] == "NoiseSearchSampler")
    assert str(sampler) in cached and str(viewer_id) not in cached, "picking must not sample again"

    page.evaluate("() => window.comfyAPI.app.app.extensionManager.setting.set('Comfy.ColorPalette', 'light')")
    page.wait_for_timeout(500)
    light_state = page.evaluate(VIEWER_STATE)
    assert light_state["background"] != state["background"], "the viewer must follow the theme's CSS variables"
    light = screenshot(page, "score_viewer_light.png")
    assert dark.stat().st_size > 10_000 and light.stat().st_size > 10_000
    ours = [e for e in errors if "score_viewer" in e]
    assert ours == [], "\n".join(ours)
