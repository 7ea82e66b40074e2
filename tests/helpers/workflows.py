"""UI-format (graph) workflows read as the frontend reads them: widget values, link checks, API conversion."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

from . import REPO_ROOT

WORKFLOW_DIR = REPO_ROOT / "example_workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # drawn by the frontend, never sent to the server
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Combos listing the user's own files: the examples name the real files, the test server has the tiny ones.
LOCAL_FILES = {"CheckpointLoaderSimple": ("ckpt_name", ".safetensors"), "LoadImage": ("image", ".png"),
               "UNETLoader": ("unet_name", ".safetensors"), "VAELoader": ("vae_name", ".safetensors")}


def input_specs(info: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, required) for a node's inputs in the order the frontend creates them."""
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    return [(name, info["input"][section][name], section == "required")
            for section in ("required", "optional") for name in order.get(section, [])]


def _opts(spec: list) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_widget(spec: list) -> bool:
    kind = spec[0]
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not _opts(spec).get("forceInput")


def combo_options(spec: list):
    return spec[0] if isinstance(spec[0], list) else _opts(spec).get("options")


def extra_widgets(name: str, spec: list) -> int:
    """Widgets the frontend adds after this one: control_after_generate after seeds, the upload button."""
    opts = _opts(spec)
    if spec[0] == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
        return 1
    if combo_options(spec) is not None and opts.get("control_after_generate"):
        return 1
    return 1 if opts.get("image_upload") else 0


def widget_values(node: dict, info: dict) -> dict:
    """{input name: value} read from `widgets_values`; optional widgets added after the workflow was saved take
    their defaults (as the frontend gives them); raises when the count does not fit the node definition."""
    values = list(node.get("widgets_values") or [])
    out, i = {}, 0
    for name, spec, required in input_specs(info):
        if not is_widget(spec):
            continue
        if i >= len(values):
            if required:
                raise ValueError(f"node {node['id']} ({node['type']}): widgets_values has {len(values)} values, "
                                 f"too few for '{name}'")
            out[name] = _opts(spec).get("default")
            continue
        out[name] = values[i]
        i += 1 + extra_widgets(name, spec)
    if i != len(values):
        raise ValueError(f"node {node['id']} ({node['type']}): widgets_values has {len(values)} values, "
                         f"the definition takes {i}")
    return out


def value_problem(name: str, spec: list, value) -> str | None:
    """Why `value` does not fit widget input `name`, or None."""
    opts, options = _opts(spec), combo_options(spec)
    if options is not None:
        return None if value in options else f"'{name}' = {value!r} is not one of its options"
    kind = spec[0]
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"'{name}' = {value!r} is not a boolean"
    if kind == "STRING":
        return None if isinstance(value, str) else f"'{name}' = {value!r} is not a string"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"'{name}' = {value!r} is not a number"
    if kind == "INT" and value != int(value):
        return f"'{name}' = {value!r} is not an integer"
    if value < opts.get("min", -math.inf) or value > opts.get("max", math.inf):
        return f"'{name}' = {value!r} is outside [{opts.get('min')}, {opts.get('max')}]"
    return None


def types_compatible(out_type: str, in_type) -> bool:
    if isinstance(in_type, list):  # a combo fed by a link: the source must output COMBO or *
        in_type = "COMBO"
    if "*" in (out_type, in_type):
        return True
    return bool(set(out_type.split(",")) & set(in_type.split(",")))


def workflow_problems(workflow: dict, object_info: dict) -> list[str]:
    """Everything the frontend would reject or silently change when loading `workflow` on this server."""
    problems = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    for node in workflow["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        if node["type"] in FRONTEND_ONLY:
            continue
        info = object_info.get(node["type"])
        if info is None:
            problems.append(f"{where}: no such node type on the server")
            continue
        if node.get("mode", 0) != 0:
            problems.append(f"{where}: mode {node['mode']} (muted or bypassed)")
        try:
            values = widget_values(node, info)
        except ValueError as e:
            problems.append(str(e))
            values = {}
        specs = {name: (spec, required) for name, spec, required in input_specs(info)}
        linked = {}
        for slot in node.get("inputs", []):
            if slot["name"] not in specs:
                problems.append(f"{where}: input '{slot['name']}' is not in the node definition")
            elif slot.get("link") is not None:
                linked[slot["name"]] = slot["link"]
        for name, value in values.items():
            if name not in linked and (p := value_problem(name, specs[name][0], value)):
                problems.append(f"{where}: {p}")
        for name, (spec, required) in specs.items():
            if required and not is_widget(spec) and name not in linked:
                problems.append(f"{where}: required input '{name}' is not connected")
        expected = list(zip(info["output_name"], info["output"]))
        got = [(o["name"], o["type"]) for o in node.get("outputs", [])]
        if got != [(n, t if not isinstance(t, list) else "COMBO") for n, t in expected]:
            problems.append(f"{where}: outputs {got} differ from the definition {expected}")
    for link_id, src, src_slot, dst, dst_slot, link_type in workflow["links"]:
        where = f"link {link_id}"
        if src not in nodes or dst not in nodes:
            problems.append(f"{where}: joins missing node {src if src not in nodes else dst}")
            continue
        src_info, dst_info = object_info.get(nodes[src]["type"]), object_info.get(nodes[dst]["type"])
        if src_info is None or dst_info is None:
            continue
        out_type = src_info["output"][src_slot]
        dst_input = nodes[dst]["inputs"][dst_slot]
        in_spec = dict((n, s) for n, s, _ in input_specs(dst_info)).get(dst_input["name"])
        if dst_input.get("link") != link_id:
            problems.append(f"{where}: target slot {dst_slot} of node {dst} does not point back to it")
        if link_id not in (nodes[src]["outputs"][src_slot].get("links") or []):
            problems.append(f"{where}: source slot {src_slot} of node {src} does not list it")
        if link_type != out_type:
            problems.append(f"{where}: typed {link_type} but node {src} output {src_slot} is {out_type}")
        if in_spec is not None and not types_compatible(out_type, in_spec[0]):
            problems.append(f"{where}: {out_type} from node {src} into '{dst_input['name']}' ({in_spec[0]}) "
                            f"of node {dst}")
    for node in workflow["nodes"]:
        for slot in node.get("inputs", []):
            if slot.get("link") is not None and slot["link"] not in links:
                problems.append(f"node {node['id']}: input '{slot['name']}' names missing link {slot['link']}")
    return problems


def workflow_to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt the frontend queues for `workflow` (frontend-only nodes dropped)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        info = object_info[node["type"]]
        inputs = dict(widget_values(node, info))
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, src, src_slot, _, _, _ = links[slot["link"]]
                inputs[slot["name"]] = [str(src), src_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title") or info.get("display_name") or node["type"]}}
    return prompt


def localize(workflow: dict, env) -> dict:
    """The workflow with its model files and input image swapped for the test server's (first widgets; Wan 2.2's
    high- and low-noise experts by their file names). A Wan text
    encoder (umT5-XXL, 5.7 B parameters) cannot be built here: its CLIPLoader becomes the tiny SD3 checkpoint, whose
    CLIP gives text states of the same 4096 width (its CLIP output is slot 1)."""
    workflow = copy.deepcopy(workflow)
    is_i2v = any(n["type"] == "WanImageToVideo" for n in workflow["nodes"])
    local = {"CheckpointLoaderSimple": env.checkpoint, "LoadImage": env.input_image,
             "UNETLoader": env.wan_i2v if is_i2v else env.wan_model, "VAELoader": env.wan_vae}
    for node in workflow["nodes"]:
        if node["type"] in LOCAL_FILES:
            name, suffix = LOCAL_FILES[node["type"]]
            original = str(node["widgets_values"][0])
            assert original.endswith(suffix), f"node {node['id']}: {name} should name a {suffix} file"
            node["widgets_values"][0] = local[node["type"]]
            if node["type"] == "UNETLoader" and "_noise_" in original:  # Wan 2.2 A14B's experts
                high = "high_noise" in original
                node["widgets_values"][0] = ((env.wan22_i2v_high if high else env.wan22_i2v_low) if is_i2v
                                             else (env.wan22_high if high else env.wan22_low))
        elif node["type"] == "CLIPLoader":
            node.update(type="CheckpointLoaderSimple", widgets_values=[env.checkpoint],
                        properties={"Node name for S&R": "CheckpointLoaderSimple"},
                        outputs=[{"name": "MODEL", "type": "MODEL", "links": [], "slot_index": 0},
                                 {**node["outputs"][0], "slot_index": 1},
                                 {"name": "VAE", "type": "VAE", "links": [], "slot_index": 2}])
            for link in workflow["links"]:
                if link[1] == node["id"]:
                    link[2] = 1
    return workflow


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def widget_index(node: dict, info: dict, name: str) -> int:
    """Position of widget `name` in `widgets_values` (extra widgets such as control_after_generate counted)."""
    i = 0
    for input_name, spec, _ in input_specs(info):
        if is_widget(spec):
            if input_name == name:
                return i
            i += 1 + extra_widgets(input_name, spec)
    raise KeyError(name)


def widget_defaults(info: dict) -> dict:
    """Every widget input of a node at its default (combos: their default or first option)."""
    out = {}
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(spec[0], list) or spec[0] == "COMBO":
                options = spec[0] if isinstance(spec[0], list) else opts.get("options", [])
                out[name] = opts.get("default", options[0] if options else None)
            elif "default" in opts:
                out[name] = opts["default"]
    return out
