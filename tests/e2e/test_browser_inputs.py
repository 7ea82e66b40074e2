"""The sampler nodes in the real frontend (headless Chromium, driven by Playwright) show only the inputs the chosen
algorithm reads (web/js/search_inputs.js): each input's `noise_search_for` in /object_info names its algorithms.
Hidden inputs keep their values, are saved in the workflow and queued; a linked input stays shown with its link. The
canvas renderer on every frontend, Vue nodes ("Nodes 2.0") where the frontend applies `widget.hidden` to them.

Another frontend build: NOISE_SEARCH_FRONTEND_ROOT (see tests/helpers/comfy_server.py).
"""

from __future__ import annotations

import pytest

from noise_search.tests.helpers.browser import open_frontend
from noise_search.tests.helpers.workflows import (
    WORKFLOWS,
    combo_options,
    input_specs,
    load,
    localize,
    widget_index,
    workflow_to_api,
)

pytestmark = [pytest.mark.comfyui, pytest.mark.browser, pytest.mark.slow]

KEY = "noise_search_for"
SELECTOR = "algorithm"
SAMPLERS = ("NoiseSearchSampler", "NoiseSearchSamplerCustom")
VUE_NODES = "Comfy.VueNodes.Enabled"
SAMPLER_WORKFLOWS = [p for p in WORKFLOWS if any(n["type"] in SAMPLERS for n in load(p)["nodes"])]

# Whether the canvas gives a widget its row: newer frontends also count a linked widget's row (its value greyed out)
# as `hidden`, so ask the node as its own layout does.
ROW_SHOWN = """const rowShown = (node, w) =>
  (node.isWidgetRowVisible ? node.isWidgetRowVisible(w) : node.isWidgetVisible(w));"""

# One node's widgets as the canvas lays them out (after a frame is drawn), its size and its minimum size.
NODE_STATE = """(node) => {
  """ + ROW_SHOWN + """
  const app = window.comfyAPI.app.app;
  app.canvas.draw(true, true);
  return {
    algorithm: node.widgets.find((w) => w.name === "algorithm").value,
    hidden: node.widgets.filter((w) => !rowShown(node, w)).map((w) => w.name),
    rows: node.widgets.filter((w) => rowShown(node, w))
      .map((w) => ({ name: w.name, y: w.y, height: w.computedHeight })),
    values: Object.fromEntries(node.widgets.map((w) => [w.name, w.value])),
    size: [...node.size],
    min: [...node.computeSize()],
  };
}"""

# Chooses an algorithm as the canvas's combo menu does (the widget's setValue: value, callback, onWidgetChanged).
CHOOSE = """([node, value]) => {
  const app = window.comfyAPI.app.app, widget = node.widgets.find((w) => w.name === "algorithm");
  widget.setValue(value, { node, canvas: app.canvas });
}"""

NEW_NODE = """(type) => {
  const app = window.comfyAPI.app.app;
  app.graph.clear();
  const node = window.LiteGraph.createNode(type);
  node.pos = [100, 100];
  app.graph.add(node);
  return node;
}"""

# Whether this frontend's Vue nodes follow `widget.hidden`: there it is an accessor over the widget's visibility state.
HIDDEN_ACCESSOR = """() => {
  const node = window.LiteGraph.createNode("NoiseSearchSampler");
  for (let o = node.widgets[0]; o; o = Object.getPrototypeOf(o)) {
    const d = Object.getOwnPropertyDescriptor(o, "hidden");
    if (d) return typeof d.get === "function";
  }
  return false;
}"""


def algorithm_inputs(info: dict) -> dict[str, list[str]]:
    """{input name: the algorithms that read it} for the inputs not every algorithm reads."""
    return {name: spec[1][KEY] for name, spec, _ in input_specs(info)
            if len(spec) > 1 and isinstance(spec[1], dict) and KEY in spec[1]}


def expected_hidden(info: dict, algorithm: str, linked: set = frozenset()) -> list[str]:
    """The widgets the node hides for `algorithm`, in widget order: those it does not read, unless linked."""
    return [name for name, users in algorithm_inputs(info).items() if algorithm not in users and name not in linked]


def algorithms(info: dict) -> list[str]:
    """The selector's options, checked to name every algorithm the inputs name."""
    options = combo_options({n: s for n, s, _ in input_specs(info)}[SELECTOR])
    named = {a for users in algorithm_inputs(info).values() for a in users}
    assert named and named <= set(options), f"every algorithm named by {KEY} must be an option of '{SELECTOR}'"
    return list(options)


def open_page(chromium, env, vue: bool = False):
    """A frontend page (canvas or Vue nodes); `page.errors` collects uncaught errors."""
    return open_frontend(chromium, env.server.url, {VUE_NODES: vue}, 1400, 1100)


def our_errors(page) -> list[str]:
    """Uncaught errors thrown in the extension (the frontend's own startup errors are not ours)."""
    return [e for e in page.errors if "search_inputs" in e]


@pytest.fixture(scope="module")
def page(chromium, comfy_env):
    page = open_page(chromium, comfy_env)
    yield page
    page.close()


def check_rows(state: dict) -> None:
    """The shown widgets sit one after another: a hidden widget leaves no gap on the canvas."""
    for above, below in zip(state["rows"], state["rows"][1:]):
        assert below["y"] == pytest.approx(above["y"] + above["height"]), f"gap between {above} and {below}"
    assert state["size"][1] >= state["min"][1]


def other_value(spec: list, value):
    """A valid value of this INT or FLOAT input other than `value`."""
    opts = spec[1]
    if spec[0] == "INT":
        return value + 1 if value + 1 <= opts.get("max", value + 1) else value - 1
    candidate = round(opts.get("min", 0.0) + 0.375 * (opts.get("max", 1.0) - opts.get("min", 0.0)), 4)
    return candidate if candidate != value else round(candidate / 2 + opts.get("min", 0.0) / 2, 4)


def change_hidden_values(workflow: dict, object_info: dict) -> dict[int, list[str]]:
    """Gives every input a sampler will hide a value other than its saved one (a reset would show); returns the
    hidden inputs by node id."""
    hidden = {}
    for node in workflow["nodes"]:
        if node["type"] not in SAMPLERS:
            continue
        info = object_info[node["type"]]
        specs = {n: s for n, s, _ in input_specs(info)}
        algorithm = node["widgets_values"][widget_index(node, info, SELECTOR)]
        hidden[node["id"]] = expected_hidden(info, algorithm)
        assert hidden[node["id"]], f"node {node['id']}: {algorithm} should leave some input hidden"
        for name in hidden[node["id"]]:
            i = widget_index(node, info, name)
            if i < len(node["widgets_values"]):  # inputs added after the workflow was saved load with defaults
                node["widgets_values"][i] = other_value(specs[name], node["widgets_values"][i])
    return hidden


@pytest.mark.parametrize("node_type", SAMPLERS)
def test_each_algorithm_shows_only_the_inputs_it_reads(page, comfy, node_type):
    info = comfy.object_info()[node_type]
    node = page.evaluate_handle(NEW_NODE, node_type)
    state = page.evaluate(NODE_STATE, node)
    first = state["algorithm"]
    assert state["hidden"] == expected_hidden(info, first), "a new node shows only its default algorithm's inputs"
    assert state["size"][1] == state["min"][1], "a new node is as small as its shown inputs allow"
    check_rows(state)

    changed = {}  # a value set on each input while it is shown survives hiding and comes back
    heights = {}
    for algorithm in [a for a in algorithms(info) if a != first] + [first]:
        page.evaluate(CHOOSE, [node, algorithm])
        state = page.evaluate(NODE_STATE, node)
        assert state["algorithm"] == algorithm
        assert state["hidden"] == expected_hidden(info, algorithm), algorithm
        check_rows(state)
        assert state["size"][1] == state["min"][1], f"{algorithm}: the node should fit its shown inputs"
        heights[algorithm] = state["size"][1]
        for name, value in changed.items():
            assert state["values"][name] == value, f"{name} lost its value when hidden and shown again"
        specs = {n: s for n, s, _ in input_specs(info)}
        for name in algorithm_inputs(info):
            if name not in state["hidden"] and name not in changed:
                changed[name] = other_value(specs[name], state["values"][name])
                page.evaluate("([node, name, v]) => { node.widgets.find((w) => w.name === name).value = v; }",
                              [node, name, changed[name]])
    shown = {a: len(algorithm_inputs(info)) - len(expected_hidden(info, a)) for a in heights}
    assert sorted(heights, key=heights.get) == sorted(shown, key=shown.get), f"node heights {heights}"

    queued = page.evaluate("async (node) => (await window.comfyAPI.app.app.graphToPrompt()).output[node.id].inputs",
                           node)
    hidden_now = set(expected_hidden(info, first))
    assert hidden_now & set(changed), "some changed input should be hidden now"
    for name, value in changed.items():
        assert queued[name] == pytest.approx(value), f"hidden or not, {name} is queued with its value"
    assert our_errors(page) == [], our_errors(page)


@pytest.mark.parametrize("path", SAMPLER_WORKFLOWS, ids=lambda p: p.stem)
def test_saved_workflow_loads_unchanged_and_queues_hidden_values(path, page, comfy, comfy_env):
    object_info = comfy.object_info()
    workflow = localize(load(path), comfy_env)
    hidden = change_hidden_values(workflow, object_info)

    posted = []

    def capture(route):
        if route.request.method != "POST":
            return route.continue_()
        posted.append(route.request.post_data_json)
        return route.fulfill(json={"prompt_id": "captured", "number": 0, "node_errors": {}})

    page.route("**/prompt", capture)
    try:
        loaded = page.evaluate("""async (workflow) => {
          """ + ROW_SHOWN + """
          const app = window.comfyAPI.app.app;
          await app.loadGraphData(workflow);
          app.canvas.draw(true, true);
          const nodes = app.graph.serialize().nodes;
          const state = Object.fromEntries(app.graph._nodes.map((n) => [n.id, {
            hidden: (n.widgets ?? []).filter((w) => !rowShown(n, w)).map((w) => w.name),
            size: [...n.size], min: [...n.computeSize()] }]));
          await app.queuePrompt(0, 1);
          return { nodes: nodes.map((n) => ({ id: n.id, widgets_values: n.widgets_values ?? [] })), state };
        }""", workflow)
    finally:
        page.unroute("**/prompt", capture)

    for node_id, names in hidden.items():
        state = loaded["state"][str(node_id)]
        assert state["hidden"] == names, f"node {node_id}: hidden after loading"
        saved = next(n["size"] for n in workflow["nodes"] if n["id"] == node_id)
        assert state["size"] == [max(s, m) for s, m in zip(saved, state["min"])], "the saved size is kept"
    ours = {n["id"]: n["widgets_values"] for n in workflow["nodes"]}
    for node in loaded["nodes"]:
        saved = ours[node["id"]]  # inputs added after the workflow was saved follow with their defaults
        assert node["widgets_values"][:len(saved)] == saved, f"node {node['id']}: widget values changed on load"

    assert len(posted) == 1, "one prompt queued"
    expected = workflow_to_api(workflow, object_info)
    output = posted[0]["prompt"]
    assert sorted(output) == sorted(expected)
    for node_id, node in expected.items():
        assert output[node_id]["inputs"] == node["inputs"], f"node {node_id} ({node['class_type']}) queued otherwise"
    saved = {n["id"]: n.get("widgets_values") for n in posted[0]["extra_data"]["extra_pnginfo"]["workflow"]["nodes"]}
    for node_id in hidden:
        assert saved[node_id][:len(ours[node_id])] == ours[node_id], "the workflow saved with the prompt keeps " \
            "the hidden values"
    assert our_errors(page) == [], our_errors(page)


SLOT = "const slotOf = (node, name) => node.inputs.findIndex((i) => (i.widget?.name ?? i.name) === name);"
LINK = "([node, source, name]) => { " + SLOT + " source.connect(0, node, slotOf(node, name)); }"
UNLINK = "([node, name]) => { " + SLOT + " node.disconnectInput(slotOf(node, name)); }"

SLOT_STATE = """([node, name]) => {
  """ + ROW_SHOWN + """
  const app = window.comfyAPI.app.app;
  app.canvas.draw(true, true);
  const slot = node.inputs.findIndex((i) => (i.widget?.name ?? i.name) === name);
  const widget = node.widgets.find((w) => w.name === name);
  return { linked: node.isInputConnected(slot), slotY: node.getInputPos(slot)[1] - node.pos[1], widgetY: widget.y,
           widgetHeight: widget.computedHeight,
           hidden: node.widgets.filter((w) => !rowShown(node, w)).map((w) => w.name) };
}"""


def test_linked_inputs_stay_shown_with_their_link(page, comfy):
    info = comfy.object_info()["NoiseSearchSampler"]
    first = algorithms(info)[0]
    name = expected_hidden(info, first)[0]
    node = page.evaluate_handle(NEW_NODE, "NoiseSearchSampler")
    source = page.evaluate_handle("""() => {
      const app = window.comfyAPI.app.app, source = window.LiteGraph.createNode("PrimitiveInt");
      source.pos = [-300, 100];
      app.graph.add(source);
      source.widgets[0].value = 3;
      return source;
    }""")
    assert page.evaluate(NODE_STATE, node)["hidden"] == expected_hidden(info, first)

    page.evaluate(LINK, [node, source, name])
    state = page.evaluate(SLOT_STATE, [node, name])
    assert state["linked"] and state["hidden"] == expected_hidden(info, first, {name}), "a linked input is shown"
    assert state["widgetY"] < state["slotY"] < state["widgetY"] + state["widgetHeight"], "its socket sits on its row"
    check_rows(page.evaluate(NODE_STATE, node))
    prompt = page.evaluate("async () => (await window.comfyAPI.app.app.graphToPrompt()).output")
    source_id = page.evaluate("(n) => n.id", source)
    assert prompt[str(page.evaluate("(n) => n.id", node))]["inputs"][name] == [str(source_id), 0]

    # Saved and loaded again: the link and the shown input come back.
    node = page.evaluate_handle("""async () => {
      const app = window.comfyAPI.app.app;
      await app.loadGraphData(app.graph.serialize());
      return app.graph._nodes.find((n) => n.type === "NoiseSearchSampler");
    }""")
    state = page.evaluate(SLOT_STATE, [node, name])
    assert state["linked"] and state["hidden"] == expected_hidden(info, first, {name})
    assert state["widgetY"] < state["slotY"] < state["widgetY"] + state["widgetHeight"]

    page.evaluate(UNLINK, [node, name])
    state = page.evaluate(NODE_STATE, node)
    assert state["hidden"] == expected_hidden(info, first), "unlinked, it is hidden again"
    assert state["size"][1] == state["min"][1]
    assert our_errors(page) == [], our_errors(page)


def test_a_linked_algorithm_shows_every_input(page, comfy):
    info = comfy.object_info()["NoiseSearchSampler"]
    first = algorithms(info)[0]
    node = page.evaluate_handle(NEW_NODE, "NoiseSearchSampler")
    source = page.evaluate_handle("""() => {
      const app = window.comfyAPI.app.app, source = window.LiteGraph.createNode("PrimitiveNode");
      source.pos = [-300, 100];
      app.graph.add(source);
      return source;
    }""")
    page.evaluate(LINK, [node, source, SELECTOR])
    state = page.evaluate(NODE_STATE, node)
    assert state["hidden"] == [], "the algorithm comes from a link: every input is shown"
    check_rows(state)
    page.evaluate(UNLINK, [node, SELECTOR])
    state = page.evaluate(NODE_STATE, node)
    assert state["hidden"] == expected_hidden(info, state["algorithm"]) and state["algorithm"] == first
    assert our_errors(page) == [], our_errors(page)


VUE_ROWS = """(id) => [...document.querySelectorAll(`.lg-node[data-node-id="${id}"] [data-widget-name]`)]
  .map((row) => row.dataset.widgetName)"""


def test_vue_nodes_show_only_the_inputs_the_algorithm_reads(chromium, comfy_env, comfy):
    page = open_page(chromium, comfy_env, vue=True)
    try:
        version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
        if page.evaluate("() => window.LiteGraph.vueNodesMode") is not True or not page.evaluate(HIDDEN_ACCESSOR):
            pytest.skip(f"frontend {version}: its Vue nodes do not follow widget.hidden (they read a widget's options "
                        f"once), so every input stays shown there; run with NOISE_SEARCH_FRONTEND_ROOT set to a newer "
                        f"build")
        object_info = comfy.object_info()
        path = next(p for p in SAMPLER_WORKFLOWS if "paths" not in p.stem)
        workflow = localize(load(path), comfy_env)
        change_hidden_values(workflow, object_info)
        sampler = next(n for n in workflow["nodes"] if n["type"] in SAMPLERS)
        info = object_info[sampler["type"]]
        first = sampler["widgets_values"][widget_index(sampler, info, SELECTOR)]
        page.evaluate("""async ([workflow, id]) => {
          const app = window.comfyAPI.app.app;
          await app.loadGraphData(workflow);
          const node = app.graph.getNodeById(id);
          app.canvas.ds.scale = 1;
          app.canvas.ds.offset = [-node.pos[0] + 60, -node.pos[1] + 80];
          app.graph.setDirtyCanvas(true, true);
        }""", [workflow, sampler["id"]])
        element = page.locator(f'.lg-node[data-node-id="{sampler["id"]}"]')
        element.wait_for()
        page.wait_for_timeout(300)

        def shown() -> list[str]:
            return [n for n in page.evaluate(VUE_ROWS, sampler["id"]) if n in algorithm_inputs(info)]

        assert shown() == [n for n in algorithm_inputs(info) if n not in expected_hidden(info, first)]
        heights = {first: element.bounding_box()["height"]}
        for algorithm in [a for a in algorithms(info) if a != first]:
            row = element.locator(f'[data-widget-name="{SELECTOR}"]')
            row.locator("[role=combobox]").first.click()
            page.locator("[role=option]").filter(has_text=algorithm).first.click()
            page.wait_for_timeout(300)
            assert page.evaluate(f"() => window.comfyAPI.app.app.graph.getNodeById({sampler['id']})"
                                 f".widgets.find((w) => w.name === '{SELECTOR}').value") == algorithm
            expected = [n for n in algorithm_inputs(info) if n not in expected_hidden(info, algorithm)]
            assert shown() == expected, algorithm
            heights[algorithm] = element.bounding_box()["height"]
        counts = {a: len(algorithm_inputs(info)) - len(expected_hidden(info, a)) for a in heights}
        for a, height in heights.items():
            for b, other in heights.items():
                if counts[a] < counts[b]:
                    assert height < other, f"the Vue node should fit its shown inputs: {heights}"

        output = page.evaluate("async () => (await window.comfyAPI.app.app.graphToPrompt()).output")
        expected = workflow_to_api(workflow, object_info)[str(sampler["id"])]["inputs"]
        queued = output[str(sampler["id"])]["inputs"]
        expected[SELECTOR] = algorithm  # the last one chosen above; every other input as loaded, hidden or not
        assert queued == expected
        assert our_errors(page) == [], our_errors(page)
    finally:
        page.close()
