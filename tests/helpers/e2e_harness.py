"""A real ComfyUI server with the pack installed, driven over HTTP (after ComfyUI's tests/execution).

Session fixtures build a base directory (tiny SD3 checkpoint, tiny verifier models, an input image, the pack
symlinked into custom_nodes/), start `main.py --cpu --base-directory ...` on a free port and stop it at the end.
Test modules import the fixtures they use: `from noise_search.tests.helpers.e2e_harness import comfy, ...`.
The last section reads UI-format workflows as the frontend does: widget values, link checks, API conversion.
"""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from .tiny_sd3 import FILENAME as TINY_SD3, build_tiny_sd3

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_DIR_NAME = "comfyui-noise-search"
INPUT_IMAGE = "noise_search_e2e_input.png"
STARTUP_TIMEOUT = 180.0


def comfyui_path() -> Path:
    """The ComfyUI checkout named by COMFYUI_PATH; skips the calling test when it is unset or wrong."""
    value = os.environ.get("COMFYUI_PATH")
    if not value:
        pytest.skip("COMFYUI_PATH is not set: point it at a ComfyUI checkout to run the end-to-end tests")
    path = Path(value).expanduser().resolve()
    if not (path / "main.py").is_file():
        pytest.skip(f"COMFYUI_PATH={value} has no main.py: point it at a ComfyUI checkout")
    return path


def frontend_args() -> tuple[str, ...]:
    """`--front-end-root DIR` when NOISE_SEARCH_FRONTEND_ROOT names a frontend build (a `static` folder), else ()."""
    value = os.environ.get("NOISE_SEARCH_FRONTEND_ROOT")
    if not value:
        return ()
    root = Path(value).expanduser().resolve()
    if not (root / "index.html").is_file():
        pytest.fail(f"NOISE_SEARCH_FRONTEND_ROOT={value} has no index.html: point it at a frontend build, e.g. "
                    f"<pip --target dir>/comfyui_frontend_package/static")
    return ("--front-end-root", str(root))


class PromptRejected(RuntimeError):
    """POST /prompt answered an error (validation failed before anything ran)."""

    def __init__(self, status: int, body: dict):
        self.status, self.body = status, body
        self.node_errors: dict = body.get("node_errors", {}) or {}
        super().__init__(f"/prompt answered {status}: {json.dumps(body)[:2000]}")

    def messages(self) -> list[str]:
        """Every error text of the rejection: the top-level error and each node's errors with their inputs."""
        out = []
        err = self.body.get("error", {})
        if isinstance(err, dict):
            out.append(f"{err.get('type', '')}: {err.get('message', '')} {err.get('details', '')}")
        for node_id, entry in self.node_errors.items():
            for e in entry.get("errors", []):
                inp = (e.get("extra_info") or {}).get("input_name", "")
                out.append(f"node {node_id} ({entry.get('class_type')}) input {inp}: {e.get('message')} {e.get('details')}")
        return out


@dataclass
class Run:
    """One finished prompt as /history reports it."""

    prompt_id: str
    history: dict
    seconds: float
    server_log: Any = None  # callable returning the server log tail, shown when `check` fails
    outputs: dict = field(init=False)
    status: str = field(init=False)
    messages: list = field(init=False)

    def __post_init__(self) -> None:
        self.outputs = self.history.get("outputs", {})
        status = self.history.get("status", {})
        self.status = status.get("status_str", "")
        self.messages = status.get("messages", [])

    def message(self, event: str) -> Optional[dict]:
        """The data of the first status message of type `event` (execution_error, execution_interrupted...)."""
        for name, data in self.messages:
            if name == event:
                return data
        return None

    @property
    def error(self) -> Optional[dict]:
        return self.message("execution_error")

    def check(self) -> "Run":
        """Raise with ComfyUI's error (type, message, node, traceback) unless the prompt succeeded."""
        if self.status != "success":
            err = self.error or {}
            trace = "".join(err.get("traceback", []))
            log = self.server_log() if self.server_log is not None else ""
            raise AssertionError(f"prompt {self.prompt_id} ended '{self.status}': node {err.get('node_id')} "
                                 f"({err.get('node_type')}) {err.get('exception_type')}: {err.get('exception_message')}\n"
                                 f"{trace}\n----- ComfyUI log (tail) -----\n{log}")
        return self


class ComfyClient:
    """HTTP client for one server: queue, wait, fetch, interrupt, object_info."""

    def __init__(self, url: str, server_log: Any = None):
        self.url = url.rstrip("/")
        self.server_log = server_log
        self.client_id = str(uuid.uuid4())
        self._object_info: Optional[dict] = None

    def _request(self, path: str, data: Optional[dict] = None, timeout: float = 30.0) -> Any:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def object_info(self, refresh: bool = False) -> dict:
        if self._object_info is None or refresh:
            self._object_info = self._request("/object_info", timeout=120.0)
        return self._object_info

    def queue(self, prompt: dict) -> str:
        """POST /prompt; returns the prompt id or raises PromptRejected with the server's node errors."""
        try:
            answer = self._request("/prompt", {"prompt": prompt, "client_id": self.client_id})
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"error": {"message": raw.decode(errors="replace")}}
            raise PromptRejected(e.code, body) from None
        if answer.get("node_errors"):
            raise PromptRejected(200, answer)
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> Optional[dict]:
        return self._request(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 120.0, poll: float = 0.1) -> Run:
        """Poll /history until the prompt is finished (success, error or interrupted)."""
        start = time.monotonic()
        while True:
            entry = self.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                return Run(prompt_id, entry, time.monotonic() - start, self.server_log)
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"prompt {prompt_id} not finished after {timeout:.0f}s; queue: {self.queue_state()}")
            time.sleep(poll)

    def run(self, prompt: dict, timeout: float = 120.0) -> Run:
        """Queue and wait; the Run may be an error (use `.check()` to require success)."""
        return self.wait(self.queue(prompt), timeout)

    def queue_state(self) -> dict:
        return self._request("/queue")

    def interrupt(self) -> None:
        self._request("/interrupt", {})

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=30.0) as resp:
            return resp.read()

    def images(self, run: Run, node_id: str) -> list[bytes]:
        """The bytes of every image a node reported (SaveImage, PreviewImage, viewers)."""
        return [self.view(i["filename"], i.get("subfolder", ""), i.get("type", "output"))
                for i in run.outputs.get(str(node_id), {}).get("images", [])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """`python main.py --cpu` in its own base directory; the log file is shown when startup fails."""

    def __init__(self, comfyui: Path, base: Path, extra_args: tuple[str, ...] = ()):
        self.comfyui, self.base, self.extra_args = comfyui, base, extra_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "comfyui.log"
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> ComfyClient:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(self.base / "hf_home"),
                   PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
        env.pop("PYTHONPATH", None)  # never put the repo root on a ComfyUI process's path
        args = [sys.executable, str(self.comfyui / "main.py"), "--cpu", "--base-directory", str(self.base),
                "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
                "--database-url", "sqlite:///:memory:", *self.extra_args]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(args, cwd=self.comfyui, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        client = ComfyClient(self.url, lambda: self.log(6000))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} during startup:\n{self.log()}")
            try:
                client.object_info()
                return client
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ComfyUI did not answer /object_info within {STARTUP_TIMEOUT:.0f}s:\n{self.log()}")
            time.sleep(0.5)

    def log(self, tail: int = 20000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        if getattr(self, "_log", None) is not None:
            self._log.close()


def write_input_image(path: Path, size: int = 64) -> Path:
    """A deterministic RGB test picture (gradients and a disc) for LoadImage."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.08).astype(float)
    rgb = np.stack([x, y, 0.5 * (1 - x) + 0.5 * disc], axis=-1)
    Image.fromarray((rgb * 255).round().astype("uint8")).save(path)
    return path


def tiny_verifier_models(verifiers_dir: Path) -> dict[str, str]:
    """Tiny verifier models (tests/tiny_models.py) saved under the names of the real defaults, so the
    Load Verifier dropdown values of the example workflows resolve to them through models/verifiers/.

    Returns {verifier kind: value for Load Verifier's `model`}.
    """
    from . import tiny_models as tm

    verifiers_dir.mkdir(parents=True, exist_ok=True)
    tm.make_hf_clip(verifiers_dir / "clip-vit-large-patch14", seed=11)  # CLIPScore, zero-shot, aesthetic's CLIP
    tm.make_aesthetic_mlp(verifiers_dir / "sac+logos+ava1-l14-linearMSE.pth", input_dim=16, seed=12)
    tm.make_hf_clip(verifiers_dir / "PickScore_v1", seed=13, with_processor=False)  # PickScore_v1 ships no processor
    tm.make_hf_processor(verifiers_dir / "CLIP-ViT-H-14-laion2B-s32B-b79K")  # the processor PickScore borrows
    return {"clip_score": "openai/clip-vit-large-patch14", "clip_zero_shot": "openai/clip-vit-large-patch14",
            "aesthetic": "sac+logos+ava1-l14-linearMSE.pth", "pickscore": "yuvalkirstain/PickScore_v1"}


# Shared by every module that imports these fixtures: pytest makes one fixture instance per importing
# module, so the checkpoint and the server are kept here and stopped when the last user is torn down.
_SHARED: dict = {}


def shared_tiny_sd3(tmp_path_factory) -> Path:
    """The folder holding the tiny SD3 checkpoint, built on first use in this session."""
    if "tiny_sd3" not in _SHARED:
        directory = tmp_path_factory.mktemp("tiny_sd3")
        build_tiny_sd3(directory)
        _SHARED["tiny_sd3"] = directory
    return _SHARED["tiny_sd3"]


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory) -> Path:
    """A folder holding the tiny SD3 checkpoint, built once per session."""
    return shared_tiny_sd3(tmp_path_factory)


@dataclass
class ComfyEnv:
    client: ComfyClient
    server: ComfyServer
    base: Path
    checkpoint: str
    verifier_models: dict
    input_image: str

    @property
    def output_dir(self) -> Path:
        return self.base / "output"


def start_env(comfyui: Path, base: Path, tiny_sd3: Path) -> ComfyEnv:
    """Lay out `base` (models, the pack, an input image) and start a server on it."""
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / TINY_SD3).symlink_to(tiny_sd3 / TINY_SD3)
    verifier_models = tiny_verifier_models(base / "models" / "verifiers")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    (base / "input").mkdir()
    write_input_image(base / "input" / INPUT_IMAGE)
    server = ComfyServer(comfyui, base, frontend_args())
    client = server.start()
    if "NoiseSearchSampler" not in client.object_info():
        server.stop()
        pytest.fail(f"ComfyUI started but the pack's nodes are missing from /object_info; server log:\n{server.log()}")
    return ComfyEnv(client, server, base, TINY_SD3, verifier_models, INPUT_IMAGE)


@pytest.fixture(scope="session")
def comfy_env(tmp_path_factory) -> ComfyEnv:
    """A running ComfyUI server with the pack and the tiny models, one per test session."""
    comfyui = comfyui_path()  # skips before anything is built
    if "env" not in _SHARED:
        tiny_sd3 = shared_tiny_sd3(tmp_path_factory)
        _SHARED["env"], _SHARED["env_users"] = start_env(comfyui, tmp_path_factory.mktemp("comfy_base"), tiny_sd3), 0
    env = _SHARED["env"]
    _SHARED["env_users"] += 1
    try:
        if env.server.process.poll() is not None:
            pytest.fail(f"the ComfyUI server exited with {env.server.process.returncode}:\n{env.server.log()}")
        yield env
    finally:
        _SHARED["env_users"] -= 1
        if _SHARED["env_users"] == 0:
            env.server.stop()
            del _SHARED["env"]


@pytest.fixture
def comfy(comfy_env) -> ComfyClient:
    """The session server's client."""
    return comfy_env.client


# ---------------------------------------------------------------- UI (graph) workflows, read as the frontend does

WORKFLOW_DIR = REPO_ROOT / "example_workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # drawn by the frontend, never sent to the server
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Combos listing the user's own files: the examples name the real files, the test server has the tiny ones.
LOCAL_FILES = {"CheckpointLoaderSimple": ("ckpt_name", ".safetensors"), "LoadImage": ("image", ".png")}


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
    """{input name: value} read from `widgets_values`; raises when the count does not fit the node definition."""
    values = list(node.get("widgets_values") or [])
    out, i = {}, 0
    for name, spec, _ in input_specs(info):
        if not is_widget(spec):
            continue
        if i >= len(values):
            raise ValueError(f"node {node['id']} ({node['type']}): widgets_values has {len(values)} values, too few for '{name}'")
        out[name] = values[i]
        i += 1 + extra_widgets(name, spec)
    if i != len(values):
        raise ValueError(f"node {node['id']} ({node['type']}): widgets_values has {len(values)} values, the definition takes {i}")
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
            problems.append(f"{where}: {out_type} from node {src} into '{dst_input['name']}' ({in_spec[0]}) of node {dst}")
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
    """The workflow with its checkpoint and input image swapped for the test server's files (first widgets)."""
    workflow = copy.deepcopy(workflow)
    local = {"CheckpointLoaderSimple": env.checkpoint, "LoadImage": env.input_image}
    for node in workflow["nodes"]:
        if node["type"] in LOCAL_FILES:
            name, suffix = LOCAL_FILES[node["type"]]
            assert str(node["widgets_values"][0]).endswith(suffix), f"node {node['id']}: {name} should name a {suffix} file"
            node["widgets_values"][0] = local[node["type"]]
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


# ---------------------------------------------------------------- the frontend in headless Chromium

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Ready once the backend's node types, the core's own (newer frontends register MarkdownNote after the backend's)
# and the startup workflow are in: a graph loaded before that may be replaced by the frontend's startup.
FRONTEND_READY = ("() => { const app = window.comfyAPI?.app?.app, types = window.LiteGraph?.registered_node_types;"
                  " return !!(app?.canvas && types?.NoiseSearchScoreViewer && types?.MarkdownNote"
                  " && app.extensionManager?.workflow?.activeWorkflow); }")
# Stored for the default user before each page load: no first-run dialogs, and the canvas renderer unless a test
# asks for Vue nodes (the setting persists on the server between pages).
BASE_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
                 "Comfy.VueNodes.Enabled": False}


@pytest.fixture(scope="module")
def chromium():
    """Debian's headless Chromium driven by Playwright; skips with the reason when either is missing."""
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def post_settings(url: str, settings: dict) -> None:
    """Store frontend settings (BASE_SETTINGS overridden by `settings`) for the default user before a page loads."""
    req = urllib.request.Request(f"{url}/settings", data=json.dumps({**BASE_SETTINGS, **settings}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).close()
