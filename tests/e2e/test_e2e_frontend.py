"""The example workflows in the real ComfyUI frontend (headless Chromium via Playwright): each loads with its
widget values untouched, and the frontend's own API conversion equals the one the run tests queue."""

from __future__ import annotations

import pytest

from noise_search.tests.helpers.browser import open_frontend
from noise_search.tests.helpers.workflows import FRONTEND_ONLY, WORKFLOWS, load, localize, workflow_to_api

pytestmark = [pytest.mark.comfyui, pytest.mark.browser, pytest.mark.slow]

# Load a workflow, then read back what the frontend made of it: the serialized graph and the queued prompt.
LOAD = """async (workflow) => {
  const app = window.comfyAPI.app.app;
  await app.loadGraphData(workflow);
  const graph = app.graph.serialize();
  const prompt = await app.graphToPrompt();
  return { nodes: graph.nodes.map((n) => ({ id: n.id, type: n.type, widgets_values: n.widgets_values ?? [] })),
           output: prompt.output };
}"""


@pytest.fixture(scope="module")
def page(chromium, comfy_env):
    page = open_frontend(chromium, comfy_env.server.url, {"Comfy.Workflow.ShowMissingNodesWarning": True}, 1400, 900)
    yield page
    page.close()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_frontend_loads_workflow_unchanged_and_queues_what_the_tests_queue(path, page, comfy, comfy_env):
    workflow = localize(load(path), comfy_env)
    errors_before = len(page.errors)
    loaded = page.evaluate(LOAD, workflow)
    assert page.errors[errors_before:] == [], page.errors[errors_before:]

    ours = {n["id"]: n for n in workflow["nodes"]}
    theirs = {n["id"]: n for n in loaded["nodes"]}
    assert sorted(theirs) == sorted(ours)
    for node_id, node in ours.items():
        assert theirs[node_id]["type"] == node["type"]
        saved = node["widgets_values"]  # inputs added after the workflow was saved follow with their defaults
        assert theirs[node_id]["widgets_values"][:len(saved or [])] == saved, (
            f"node {node_id} ({node['type']}): the frontend changed the widget values on load")

    expected = workflow_to_api(workflow, comfy.object_info())
    output = loaded["output"]
    assert sorted(output) == sorted(expected), "the frontend queues other nodes"
    for node_id, node in expected.items():
        assert output[node_id]["class_type"] == node["class_type"]
        assert output[node_id]["inputs"] == node["inputs"], f"node {node_id} ({node['class_type']})"
    assert not any(n["class_type"] in FRONTEND_ONLY for n in output.values())
