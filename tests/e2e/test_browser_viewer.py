"""The Score Viewer in the real frontend: headless Chromium (Debian's package, driven by Playwright) loads an example
workflow on the tiny models, queues it, and the node shows the scores, the curve, the gallery and every note of the
report; clicking a candidate sets `pick`, and the next run outputs that candidate without sampling again. The same
in Vue nodes ("Nodes 2.0", setting Comfy.VueNodes.Enabled), and nothing the viewer observes outlives its node.

Another frontend build: NOISE_SEARCH_FRONTEND_ROOT (see helpers/comfy_server.frontend_args).
Screenshots go to test-artifacts/score_viewer*.png; those of the trained world (readme_*.png) are the README's
(docs/score_viewer*.png).
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from noise_search.report.render import fmt_score
from noise_search.tests.helpers import REPO_ROOT, bench_module, unavailable
from noise_search.tests.helpers.browser import open_frontend

pytestmark = [pytest.mark.comfyui, pytest.mark.browser, pytest.mark.slow]

WORKFLOW = REPO_ROOT / "example_workflows" / "sd15_txt2img_clipscore_aesthetic.json"
ARTIFACTS = REPO_ROOT / "test-artifacts"
CANDIDATES = 6
STEPS = 3
VUE_NODES = "Comfy.VueNodes.Enabled"
# Vue nodes render extension DOM widgets (the frontend's WidgetDOM) from 1.29; 1.27 and 1.28 render built-in types only.
VUE_DOM_WIDGETS = (1, 29)

# Installed before the frontend loads: counts the observers, intervals and listeners that score_viewer.js itself
# creates (the caller's stack frame) and has not released. Listeners on elements no longer in the document count
# as released: they go with their element.
LIVE = """(() => {
  const fromViewer = () => (new Error().stack.split("\\n")[3] ?? "").includes("score_viewer.js");
  const observers = new Set(), intervals = new Set();
  let listeners = [];
  for (const name of ["ResizeObserver", "MutationObserver", "IntersectionObserver"]) {
    const Base = window[name];
    if (!Base) continue;
    window[name] = class extends Base {
      constructor(...args) { super(...args); if (fromViewer()) { this.nsKind = name; observers.add(this); } }
      disconnect() { observers.delete(this); return super.disconnect(); }
    };
  }
  const add = EventTarget.prototype.addEventListener, remove = EventTarget.prototype.removeEventListener;
  EventTarget.prototype.addEventListener = function (type, fn, options) {
    if (fromViewer()) listeners.push({ target: this, type, fn, signal: options?.signal });
    return add.call(this, type, fn, options);
  };
  EventTarget.prototype.removeEventListener = function (type, fn, options) {
    listeners = listeners.filter((l) => !(l.target === this && l.type === type && l.fn === fn));
    return remove.call(this, type, fn, options);
  };
  const setI = window.setInterval, clearI = window.clearInterval;
  window.setInterval = function (...args) {
    const id = setI.apply(this, args);
    if (fromViewer()) intervals.add(id);
    return id;
  };
  window.clearInterval = function (id) { intervals.delete(id); return clearI.call(this, id); };
  window.__nsLive = () => ({
    observers: [...observers].map((o) => o.nsKind),
    intervals: intervals.size,
    listeners: listeners.filter((l) => !l.signal?.aborted && !(l.target instanceof Node && !l.target.isConnected))
      .map((l) => `${l.target.constructor?.name}:${l.type}`),
  });
})();"""

# Shrinks the loaded example to the tiny models by widget name, then parks the viewer at the top left at 100%.
SETUP = """async ({ workflow, ckpt, models, sampler, batch, world }) => {
  const app = window.comfyAPI.app.app;
  await app.loadGraphData(workflow);
  let viewer = null;
  for (const node of app.graph._nodes) {
    const set = (name, value) => { const w = node.widgets?.find((w) => w.name === name); if (w) w.value = value; };
    const get = (name) => node.widgets?.find((w) => w.name === name)?.value;
    switch (node.comfyClass) {
      case "CheckpointLoaderSimple": set("ckpt_name", ckpt); break;
      case "EmptyLatentImage": case "EmptySD3LatentImage":
        set("width", world?.size ?? 64); set("height", world?.size ?? 64); set("batch_size", batch); break;
      case "NoiseSearchVerifierLoader": set("model", models[get("kind")]); set("device", "cpu"); break;
      case "NoiseSearchSampler": for (const [name, value] of Object.entries(sampler)) set(name, value); break;
      case "NoiseSearchScoreViewer": viewer = node; break;
    }
  }
  if (world) {  // the trained world: its caption, no negative text, CLIPScore alone on its own CLIP
    const of = (type, test = () => true) => app.graph._nodes.find((n) => n.comfyClass === type && test(n));
    const value = (node, name) => node.widgets.find((w) => w.name === name);
    value(of("PrimitiveStringMultiline"), "value").value = world.caption;
    value(of("CLIPTextEncode", (n) => !n.inputs.find((i) => i.name === "text")?.link), "text").value = "";
    const clip = of("NoiseSearchVerifierLoader", (n) => value(n, "kind").value === "clip_score");
    const sampler = of("NoiseSearchSampler");
    for (const node of [of("NoiseSearchVerifierEnsemble"), of("NoiseSearchVerifierLoader", (n) => n !== clip)])
      app.graph.remove(node);
    clip.connect(0, sampler, sampler.findInputSlot("verifier"));
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
    notesTitle: root.querySelector(".ns-notes .ns-title")?.textContent ?? null,
    notes: [...root.querySelectorAll(".ns-notes li")].map((li) => li.textContent),
    noteElements: root.querySelectorAll(".ns-notes li *:not(.ns-note-item)").length,
    hint: root.querySelector(".ns-hint")?.textContent ?? null,
    warning: root.querySelector(".ns-pick-warning")?.textContent ?? null,
    warningFollowsHint: root.querySelector(".ns-hint + .ns-pick-warning") !== null,
    connected: root.isConnected,
    vueNode: root.closest(".lg-node[data-node-id]")?.dataset.nodeId ?? null,
  };
}"""

NODE_RECT = """() => {
  const app = window.comfyAPI.app.app, node = window.__viewer, ds = app.canvas.ds;
  app.canvas.deselectAll?.();
  app.graph.setDirtyCanvas(true, true);
  const vue = node.noiseSearchViewer.root.closest(".lg-node[data-node-id]");
  if (vue) { const r = vue.getBoundingClientRect(); return { x: r.left, y: r.top, width: r.width, height: r.height }; }
  const r = app.canvas.canvas.getBoundingClientRect(), title = window.LiteGraph.NODE_TITLE_HEIGHT;
  return { x: r.left + (node.pos[0] + ds.offset[0]) * ds.scale,
           y: r.top + (node.pos[1] - title + ds.offset[1]) * ds.scale,
           width: node.size[0] * ds.scale, height: (node.size[1] + title) * ds.scale };
}"""

REMOVE_VIEWER = """async () => {
  const app = window.comfyAPI.app.app, node = window.__viewer, root = node.noiseSearchViewer.root;
  app.graph.remove(node);
  await new Promise((resolve) => setTimeout(resolve, 300));
  return { ...window.__nsLive(), inGraph: app.graph.getNodeById(node.id) != null, connected: root.isConnected };
}"""


def latest_history(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/history?max_items=1", timeout=30) as resp:
        (entry,) = json.loads(resp.read()).values()
    return entry


def open_viewer(chromium, env, settings: dict | None = None, sampler: dict | None = None, batch: int = 1,
                world: dict | None = None):
    """A page on the example workflow shrunk to the tiny models (or set up for the trained `world`: its checkpoint,
    caption, size and CLIP), the viewer in view; `page.errors` collects errors."""
    page = open_frontend(chromium, env.server.url, {"Comfy.ColorPalette": "dark", **(settings or {})}, 1500, 1500,
                         init_script=LIVE)
    sampler = {"steps": STEPS, "candidates": CANDIDATES, "budget_nfe": 0, **(sampler or {})}
    ckpt, models = (world["ckpt"], {"clip_score": world["clip"]}) if world else (env.checkpoint, env.verifier_models)
    page.viewer_id = page.evaluate(SETUP, {"workflow": json.loads(WORKFLOW.read_text()), "ckpt": ckpt,
                                           "models": models, "sampler": sampler, "batch": batch, "world": world})
    return page


def run_and_show(page) -> dict:
    """Queue the graph and wait until the viewer shows the report with its thumbnails loaded."""
    page.evaluate("() => window.comfyAPI.app.app.queuePrompt(0, 1)")
    page.wait_for_function("() => !!window.__viewer.noiseSearchViewer.data", timeout=300_000)
    page.wait_for_function(f"() => ({VIEWER_STATE})().imagesLoaded", timeout=60_000)
    return page.evaluate(VIEWER_STATE)


def frontend_version(page) -> tuple[int, ...]:
    return tuple(int(p) for p in page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__").split(".")[:2])


def our_errors(page) -> list[str]:
    return [e for e in page.errors if "score_viewer" in e]


def screenshot(page, name: str):
    """The viewer node with a small margin."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    rect = page.evaluate(NODE_RECT)
    page.wait_for_timeout(200)
    clip = {"x": max(0, rect["x"] - 12), "y": max(0, rect["y"] - 12),
            "width": rect["width"] + 24, "height": rect["height"] + 24}
    page.screenshot(path=str(path), clip=clip)
    return path


def check_search_shown(state: dict) -> list[dict]:
    """The header, curve, gallery and table show the first item's search; returns its finals best first."""
    item = state["data"]["items"][0]
    finals = [c for c in item["candidates"] if c["sigma"] == 0]
    assert len(finals) == CANDIDATES
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
    return ranked


def check_pick_reuses_the_search(page, env, other: int) -> None:
    """Queued again after picking `other`: the viewer outputs it and the sampler is not run again."""
    page.evaluate("() => window.comfyAPI.app.app.queuePrompt(0, 1)")
    page.wait_for_function(f"() => window.__viewer.noiseSearchViewer.data?.pick === {other}", timeout=300_000)
    assert page.evaluate(VIEWER_STATE)["data"]["picked"] == [other]
    cached = next((data["nodes"] for name, data in latest_history(env.server.url)["status"]["messages"]
                   if name == "execution_cached"), [])
    sampler = next(n["id"] for n in json.loads(WORKFLOW.read_text())["nodes"] if n["type"] == "NoiseSearchSampler")
    assert str(sampler) in cached and str(page.viewer_id) not in cached, "picking must not sample again"


def test_viewer_shows_the_search_and_click_picks(chromium, comfy_env):
    page = open_viewer(chromium, comfy_env)
    state = run_and_show(page)
    assert state["vueNode"] is None and state["pick"] == -1, "the canvas renderer, pick = best"
    ranked = check_search_shown(state)
    item = state["data"]["items"][0]
    members = state["data"]["members"]
    assert len(members) == 2 and all(any(m in h for h in state["headers"]) for m in members)
    assert state["warning"] == state["data"].get("pick_warning")
    assert ("without sampling again" in state["hint"]) == (state["warning"] is None)

    page.hover(".ns-viewer .ns-curve svg", position={"x": 200, "y": 60})
    tip = page.locator(".ns-viewer .ns-tip")
    assert tip.is_visible() and "NFE" in tip.text_content() and "best" in tip.text_content()
    dark = screenshot(page, "score_viewer.png")

    page.select_option(".ns-viewer select.ns-sort", "id")
    by_id = page.evaluate(VIEWER_STATE)["thumbs"]
    assert [t["id"] for t in by_id] == sorted(c["id"] for c in ranked)

    other = next(c["id"] for c in ranked if c["id"] != item["best_id"])
    page.click(f".ns-viewer .ns-thumb[data-id='{other}']")
    state = page.evaluate(VIEWER_STATE)
    assert state["pick"] == other
    assert [t["id"] for t in state["thumbs"] if t["picked"]] == [other]
    check_pick_reuses_the_search(page, comfy_env, other)
    state = page.evaluate(VIEWER_STATE)

    page.evaluate("() => window.comfyAPI.app.app.extensionManager.setting.set('Comfy.ColorPalette', 'light')")
    page.wait_for_timeout(500)
    light_state = page.evaluate(VIEWER_STATE)
    assert light_state["background"] != state["background"], "the viewer must follow the theme's CSS variables"
    light = screenshot(page, "score_viewer_light.png")
    assert dark.stat().st_size > 10_000 and light.stat().st_size > 10_000
    assert our_errors(page) == [], "\n".join(our_errors(page))
    page.close()


def test_viewer_shows_every_note_and_the_pick_warning(chromium, comfy_env):
    budget = 4 * STEPS  # room for 4 of the 6 candidates: the search shrinks and says so in each item's notes
    page = open_viewer(chromium, comfy_env, sampler={"budget_nfe": budget}, batch=2)
    state = run_and_show(page)
    items = state["data"]["items"]
    assert len(items) == 2 and all(f"pays for 4 of the {CANDIDATES} candidates" in " ".join(i["notes"]) for i in items)
    item_notes = [f"batch item {i}: {note}" for i, item in enumerate(items) for note in item["notes"]]
    expected = state["data"].get("notes", []) + item_notes  # the run's own notes first
    assert state["notes"] == expected and state["notesTitle"] == f"Notes ({len(expected)})"
    assert page.locator(".ns-viewer .ns-notes").is_visible()

    # The run's own notes and the pick warning (from newer reports), markup-like text shown as text.
    run_notes = ["top_k=5 is larger than the 3 final candidates", "<b>not bold</b> & <img src=x onerror=alert(1)>"]
    warning = "<i>picking</i> runs the search again: ComfyUI dropped the sampler's cached outputs"
    page.evaluate("""([notes, warning]) => {
      const data = structuredClone(window.__viewer.noiseSearchViewer.data);
      window.__viewer.onExecuted({ noise_search: [{ ...data, notes, pick_warning: warning }] });
    }""", [run_notes, warning])
    state = page.evaluate(VIEWER_STATE)
    assert state["notes"] == run_notes + item_notes and state["noteElements"] == 0
    assert state["warning"] == warning and state["warningFollowsHint"]
    assert "without sampling again" not in state["hint"]
    assert page.locator(".ns-viewer .ns-pick-warning").is_visible()

    # An older report: no notes anywhere, no pick warning.
    page.evaluate("""() => {
      const data = structuredClone(window.__viewer.noiseSearchViewer.data);
      delete data.notes; delete data.pick_warning;
      for (const item of data.items) delete item.notes;
      window.__viewer.onExecuted({ noise_search: [data] });
    }""")
    state = page.evaluate(VIEWER_STATE)
    assert state["notesTitle"] is None and state["notes"] == [] and state["warning"] is None
    assert len(state["thumbs"]) > 0
    assert our_errors(page) == [], "\n".join(our_errors(page))
    page.close()


def test_viewer_releases_what_it_observes_when_removed(chromium, comfy_env):
    page = open_viewer(chromium, comfy_env)
    run_and_show(page)
    page.hover(".ns-viewer .ns-curve svg", position={"x": 200, "y": 60})
    live = page.evaluate("() => window.__nsLive()")
    assert live["observers"] == ["ResizeObserver"] and live["listeners"], f"the counting hooks see nothing: {live}"
    gone = page.evaluate(REMOVE_VIEWER)
    assert not gone["inGraph"] and not gone["connected"]
    assert gone["observers"] == [] and gone["listeners"] == [] and gone["intervals"] == 0, gone
    assert our_errors(page) == [], "\n".join(our_errors(page))
    page.close()


def test_viewer_in_vue_nodes(chromium, comfy_env):
    page = open_viewer(chromium, comfy_env, {VUE_NODES: True})
    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
    if frontend_version(page) < VUE_DOM_WIDGETS:
        page.close()
        pytest.skip(f"frontend {version}: its Vue nodes render only built-in widget types, not extension DOM widgets "
                    f"(from {'.'.join(map(str, VUE_DOM_WIDGETS))}); "
                    f"run with NOISE_SEARCH_FRONTEND_ROOT set to a newer build")
    state = page.evaluate(VIEWER_STATE)
    assert state["vueNode"] == str(page.viewer_id) and state["connected"], "the viewer must be inside its Vue node"
    state = run_and_show(page)
    assert state["vueNode"] == str(page.viewer_id)
    ranked = check_search_shown(state)
    assert state["notes"] and page.locator(".ns-viewer .ns-notes").is_visible()
    screenshot(page, "score_viewer_vue.png")

    other = next(c["id"] for c in ranked if c["id"] != state["data"]["items"][0]["best_id"])
    page.click(f".ns-viewer .ns-thumb[data-id='{other}']")
    state = page.evaluate(VIEWER_STATE)
    assert state["pick"] == other and [t["id"] for t in state["thumbs"] if t["picked"]] == [other]
    shown = page.evaluate("""() => [...window.__viewer.noiseSearchViewer.root.closest(".lg-node")
      .querySelectorAll("input")].filter((i) => !i.closest(".ns-viewer")).map((i) => i.value)""")
    assert str(other) in shown, f"the Vue node's pick input must show the pick, inputs: {shown}"
    queued = page.evaluate("async () => (await window.comfyAPI.app.app.graphToPrompt())"
                           f".output['{page.viewer_id}'].inputs.pick")
    assert queued == other
    check_pick_reuses_the_search(page, comfy_env, other)

    gone = page.evaluate(REMOVE_VIEWER)
    assert not gone["connected"] and gone["observers"] == [] and gone["listeners"] == [], gone
    assert our_errors(page) == [], "\n".join(our_errors(page))
    page.close()


BRACKET = """() => {
  const box = window.__viewer.noiseSearchViewer.root.querySelector(".ns-bracket");
  if (!box) return null;
  return { title: box.querySelector(".ns-title").textContent, hint: box.querySelector(".ns-hint").textContent,
           headers: [...box.querySelectorAll("th")].map((th) => th.textContent),
           rows: [...box.querySelectorAll("tbody tr")].map((tr) => [...tr.children].map((td) => td.textContent)) };
}"""


def test_viewer_shows_the_racing_bracket(chromium, comfy_env):
    """A racing search: every seed's rung scores and where it was dropped, the finishers and the winner."""
    page = open_viewer(chromium, comfy_env, sampler={"algorithm": "racing", "candidates": 6, "race_eta": 2,
                                                     "race_rungs": "0.75, 0.5"})
    page.evaluate("() => window.comfyAPI.app.app.queuePrompt(0, 1)")
    page.wait_for_function("() => !!window.__viewer.noiseSearchViewer.data", timeout=300_000)
    item = page.evaluate(VIEWER_STATE)["data"]["items"][0]
    bracket = page.evaluate(BRACKET)
    assert item["algorithm"] == "racing" and bracket is not None
    assert bracket["title"] == "Racing bracket (6 seeds)"
    assert bracket["headers"] == ["id", "seed", "rung 1 (step 1)", "rung 2 (step 2)", "final", "outcome"]
    by_id = {c["id"]: c for c in item["candidates"]}
    outcomes = {int(r[0]): r[-1] for r in bracket["rows"]}
    assert sorted(outcomes) == list(range(6))
    assert sorted(outcomes.values()) == sorted(["dropped at rung 1"] * 3 + ["dropped at rung 2", "finished", "winner"])
    assert outcomes[item["best_id"]] == "winner"
    for row in bracket["rows"]:
        c = by_id[int(row[0])]
        assert row[2] == fmt_score(c["extra"]["rungs"][0]["score"])
        assert row[4] == (fmt_score(c["score"]) if c["final"] else "-")
    assert [int(r[0]) for r in bracket["rows"][:2]] == sorted(
        (c["id"] for c in item["candidates"] if c["final"]), key=lambda i: -by_id[i]["score"])
    assert "rung 1: rho" in bracket["hint"] and our_errors(page) == []
    page.close()


ADD_WORKERS = """() => {
  const app = window.comfyAPI.app.app;
  const sampler = app.graph._nodes.find((n) => n.comfyClass === "NoiseSearchSampler");
  const workers = window.LiteGraph.createNode("NoiseSearchWorkers");
  app.graph.add(workers);
  workers.pos = [sampler.pos[0], sampler.pos[1] + sampler.size[1] + 80];
  for (const [name, value] of Object.entries({ address: "", workers: 2, gpus_per_worker: 0 }))
    workers.widgets.find((w) => w.name === name).value = value;
  workers.connect(0, sampler, sampler.findInputSlot("workers"));
  return sampler.inputs[sampler.findInputSlot("workers")].link != null;
}"""


def test_viewer_says_which_worker_made_each_candidate(chromium, comfy_env):
    """A search spread over two Ray workers (Noise Search Workers added in the page): every card names its worker,
    and the notes give each worker's share of the time."""
    try:
        import ray  # noqa: F401
    except ImportError:
        unavailable("Ray is not installed (pip install ray, the dev extra has it)")
    page = open_viewer(chromium, comfy_env)
    assert page.evaluate(ADD_WORKERS), "the Workers node did not connect to the sampler's workers input"
    state = run_and_show(page)
    item = state["data"]["items"][0]
    made_by = {c["id"]: c["extra"]["worker"] for c in item["candidates"]}
    assert set(made_by.values()) == {0, 1}
    for thumb in state["thumbs"]:
        assert f"· worker {made_by[thumb['id']]}" in thumb["text"], thumb
    assert any(n.startswith("spread over 2 Ray workers: worker 0") for n in state["notes"]), state["notes"]
    assert our_errors(page) == [], "\n".join(our_errors(page))
    page.close()


CLIPS = """() => [...window.__viewer.noiseSearchViewer.root.querySelectorAll(".ns-thumb .ns-clip")].map((box) => {
  const img = box.querySelector("img"), style = getComputedStyle(img);
  return { ratio: getComputedStyle(box).aspectRatio, frames: box.style.getPropertyValue("--ns-frames").trim(),
           natural: [img.naturalWidth, img.naturalHeight], animation: style.animationName,
           state: style.animationPlayState };
})"""


@pytest.mark.parametrize("vue", [False, True], ids=["canvas", "vue"])
def test_viewer_plays_video_candidates_on_hover(chromium, comfy_env, vue):
    """A Wan 2.1 search (the video example on the tiny models): each candidate is a strip of frames shown one frame
    at a time, paused until the pointer is over it; in the canvas and in Vue nodes."""
    from noise_search.tests.helpers.workflows import WORKFLOW_DIR, localize

    workflow = localize(json.loads((WORKFLOW_DIR / "wan21_t2v_racing_video_ensemble.json").read_text()), comfy_env)
    for node in workflow["nodes"]:
        if node["type"] == "EmptyHunyuanLatentVideo":
            node["widgets_values"] = [32, 32, 5, 1]
    page = open_frontend(chromium, comfy_env.server.url, {"Comfy.ColorPalette": "dark", VUE_NODES: vue}, 1500, 1500,
                         init_script=LIVE)
    if vue and frontend_version(page) < VUE_DOM_WIDGETS:
        version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
        page.close()
        pytest.skip(f"frontend {version}: its Vue nodes render only built-in widget types, not extension DOM widgets "
                    f"(from {'.'.join(map(str, VUE_DOM_WIDGETS))}); run with NOISE_SEARCH_FRONTEND_ROOT set to a "
                    f"newer build")
    page.evaluate(SETUP, {"workflow": workflow, "ckpt": comfy_env.checkpoint, "models": comfy_env.verifier_models,
                          "sampler": {"steps": 4, "candidates": 3, "budget_nfe": 0}, "batch": 1})
    state = run_and_show(page)
    assert (state["vueNode"] is not None) == vue
    finals = [c for c in state["data"]["items"][0]["candidates"] if c["final"]]
    clips = page.evaluate(CLIPS)
    assert len(clips) == len(finals) == len(state["thumbs"]) and state["data"]["strip_frames"] == 4
    for clip in clips:
        width, height = clip["natural"]
        assert clip["frames"] == "4" and width == 4 * height  # four square 32 px frames side by side
        assert clip["ratio"] == f"{width / 4:g} / {height}" and clip["animation"] == "ns-play"
        assert clip["state"] == "paused"
    screenshot(page, f"score_viewer_video_{'vue' if vue else 'canvas'}.png")
    first = page.locator(".ns-viewer .ns-thumb").first
    first.hover()
    assert page.evaluate(CLIPS)[0]["state"] == "running"
    assert our_errors(page) == []
    page.close()


@pytest.fixture(scope="module")
def trained_world(comfy_env) -> dict:
    """The trained Fashion-MNIST world's checkpoint and CLIP in the shared server's models (not its preview decoder:
    the other tests expect none in vae_approx)."""
    w = bench_module("fashion_world")
    w.install(comfy_env.base / "models", preview=False)
    return {"ckpt": w.CHECKPOINT, "clip": w.FILES["clip"], "caption": w.caption(7), "size": w.SIZE}


@pytest.mark.parametrize("vue", [False, True], ids=["canvas", "vue"])
def test_readme_screenshots_show_the_trained_world(chromium, comfy_env, trained_world, vue):
    """The README's pictures: a Random search of 8 sneakers (20 steps, guidance 1.0) ranked by the world's CLIP, in the
    dark and light themes and in Vue nodes (docs/score_viewer*.png are copied from these)."""
    page = open_viewer(chromium, comfy_env, {VUE_NODES: vue}, world=trained_world,
                       sampler={"steps": 20, "cfg": 1.0, "scheduler": "simple", "candidates": 8, "seed": 7})
    if vue and frontend_version(page) < VUE_DOM_WIDGETS:
        page.close()
        pytest.skip("frontend without extension widgets in Vue nodes: the Vue screenshot needs a newer build")
    state = run_and_show(page)
    item = state["data"]["items"][0]
    assert len(state["thumbs"]) == 8 and state["thumbs"][0]["id"] == item["best_id"]
    assert len({c["score"] for c in item["candidates"]}) == 8, "the trained CLIP tells the candidates apart"
    if vue:
        screenshot(page, "readme_score_viewer_vue.png")
    else:
        page.hover(".ns-viewer .ns-curve svg", position={"x": 200, "y": 60})
        screenshot(page, "readme_score_viewer.png")
        page.mouse.move(0, 0)
        page.evaluate("() => window.comfyAPI.app.app.extensionManager.setting.set('Comfy.ColorPalette', 'light')")
        page.wait_for_timeout(500)
        screenshot(page, "readme_score_viewer_light.png")
    assert our_errors(page) == [], "\n".join(our_errors(page))
    page.close()
