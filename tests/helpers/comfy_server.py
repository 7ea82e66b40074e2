"""A real ComfyUI server with the pack installed, driven over HTTP (after ComfyUI's tests/execution).

`start_env` lays out a base directory (tiny SD3 checkpoint, tiny verifier models, an input image, the pack symlinked
into custom_nodes/) and starts `main.py --cpu --base-directory ...` on a free port; tests/e2e/conftest.py holds the
fixtures that start one per session and stop it at the end.
"""

from __future__ import annotations

import json
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

from noise_search.verifiers.grading import ASPECTS

from . import REPO_ROOT, stop_process, unavailable
from .tiny_sd3 import FILENAME as TINY_SD3

PACK_DIR_NAME = "comfyui-noise-search"
INPUT_IMAGE = "noise_search_e2e_input.png"
STARTUP_TIMEOUT = 180.0


def comfyui_path() -> Path:
    """The ComfyUI checkout named by COMFYUI_PATH; skips the calling test (fails it in CI) when it is unset or wrong."""
    value = os.environ.get("COMFYUI_PATH")
    if not value:
        unavailable("COMFYUI_PATH is not set: point it at a ComfyUI checkout to run the end-to-end tests")
    path = Path(value).expanduser().resolve()
    if not (path / "main.py").is_file():
        unavailable(f"COMFYUI_PATH={value} has no main.py: point it at a ComfyUI checkout")
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
                out.append(f"node {node_id} ({entry.get('class_type')}) input {inp}: "
                           f"{e.get('message')} {e.get('details')}")
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
                                 f"({err.get('node_type')}) {err.get('exception_type')}: "
                                 f"{err.get('exception_message')}\n"
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

    def watch(self, prompt: dict, timeout: float = 120.0) -> tuple[Run, list[dict]]:
        """Run `prompt` while listening on the server's websocket as a browser tab does: the Run and every message,
        JSON ones as sent, binary ones as {"type": "binary", "event": n, "node": the node executing then}."""
        import asyncio
        import threading

        import aiohttp

        events: list = []
        ready, done = threading.Event(), threading.Event()

        async def listen() -> None:
            ws_url = self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
            node = None
            async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
                ready.set()
                while not done.is_set():
                    try:
                        msg = await ws.receive(timeout=0.2)
                    except asyncio.TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        event = json.loads(msg.data)
                        if event.get("type") == "executing":
                            node = event["data"].get("node")
                        events.append(event)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        events.append({"type": "binary", "event": int.from_bytes(msg.data[:4], "big"), "node": node})
                    else:
                        break

        thread = threading.Thread(target=lambda: asyncio.run(listen()), daemon=True)
        thread.start()
        if not ready.wait(30):
            raise TimeoutError("the server's websocket did not answer within 30 s")
        try:
            run = self.run(prompt, timeout)
        finally:
            time.sleep(0.5)  # the last messages of the prompt
            done.set()
            thread.join(10)
        return run, events

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

    def __init__(self, comfyui: Path, base: Path, extra_args: tuple[str, ...] = (), env: Optional[dict] = None):
        self.comfyui, self.base, self.extra_args, self.env = comfyui, base, extra_args, dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "comfyui.log"
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> ComfyClient:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(self.base / "hf_home"),
                   PYTHONUNBUFFERED="1", TQDM_DISABLE="1", **self.env)
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
            stop_process(self.process)
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


GRADER_ANSWER = "".join(f"{aspect}: {rating}\n" for aspect, rating in zip(ASPECTS, (7, 5, 6, 8, 4)))


def tiny_verifier_models(verifiers_dir: Path) -> dict[str, str]:
    """Tiny verifier models (tiny_models.py) saved under the names of the real defaults, so the
    Load Verifier dropdown values of the example workflows resolve to them through models/verifiers/.

    Returns {verifier kind: value for Load Verifier's `model`}.
    """
    from . import tiny_image_reward as tir
    from . import tiny_models as tm
    from . import tiny_vlm as tv

    verifiers_dir.mkdir(parents=True, exist_ok=True)
    tir.make_image_reward(verifiers_dir / "ImageReward", seed=14)
    tir.make_bert_tokenizer(verifiers_dir / "bert-base-uncased")
    # the default grader answers every one of the paper's aspects under greedy decoding; SmolVLM is plain random
    tv.make_tiny_vlm(verifiers_dir / "Qwen2.5-VL-3B-Instruct", "qwen2_5_vl", seed=15, answer=GRADER_ANSWER)
    tv.make_tiny_vlm(verifiers_dir / "SmolVLM-256M-Instruct", "smolvlm", seed=16)
    tm.make_hf_clip(verifiers_dir / "clip-vit-large-patch14", seed=11)  # CLIPScore, zero-shot, aesthetic's CLIP
    tm.make_aesthetic_mlp(verifiers_dir / "sac+logos+ava1-l14-linearMSE.pth", input_dim=16, seed=12)
    tm.make_hf_clip(verifiers_dir / "PickScore_v1", seed=13, with_processor=False)  # PickScore_v1 ships no processor
    tm.make_hf_processor(verifiers_dir / "CLIP-ViT-H-14-laion2B-s32B-b79K")  # the processor PickScore borrows
    tm.make_hf_dinov2(verifiers_dir / "dinov2-small", seed=17)  # temporal consistency's default backbone
    return {"clip_score": "openai/clip-vit-large-patch14", "clip_zero_shot": "openai/clip-vit-large-patch14",
            "aesthetic": "sac+logos+ava1-l14-linearMSE.pth", "pickscore": "yuvalkirstain/PickScore_v1",
            "image_reward": "THUDM/ImageReward", "vlm_grader": "Qwen/Qwen2.5-VL-3B-Instruct",
            "temporal_consistency": "facebook/dinov2-small",
            "motion": "openai/clip-vit-large-patch14"}  # motion reads no model: any listed value


@dataclass
class ComfyEnv:
    """A started server with its base directory and the names of the tiny files it serves."""

    client: ComfyClient
    server: ComfyServer
    base: Path
    checkpoint: str
    verifier_models: dict
    input_image: str
    wan_model: str = ""  # models/diffusion_models: the tiny Wan 2.1 text-to-video model (tiny_wan.py)
    wan_i2v: str = ""  # and its image-to-video twin
    wan_vae: str = ""  # models/vae: the Wan 2.1 VAE
    wan22_high: str = ""  # models/diffusion_models: the tiny Wan 2.2 A14B experts
    wan22_low: str = ""
    wan22_i2v_high: str = ""  # and its image-to-video experts
    wan22_i2v_low: str = ""

    @property
    def output_dir(self) -> Path:
        return self.base / "output"


def start_env(comfyui: Path, base: Path, tiny_sd3: Path, env: Optional[dict] = None,
              args: tuple[str, ...] = ()) -> ComfyEnv:
    """Lay out `base` (models, the pack, an input image) and start a server on it (`args`: more main.py options)."""
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / TINY_SD3).symlink_to(tiny_sd3 / TINY_SD3)
    verifier_models = tiny_verifier_models(base / "models" / "verifiers")
    from . import tiny_video as tiny_wan  # it runs a ComfyUI script (comfy_script imports this module)

    wan = tiny_wan.build_tiny_wan(base / "models" / "wan_files")
    unets = (tiny_wan.MODEL, tiny_wan.MODEL_I2V, tiny_wan.MODEL_HIGH, tiny_wan.MODEL_LOW, tiny_wan.MODEL_I2V_HIGH,
             tiny_wan.MODEL_I2V_LOW)
    for folder, name in [("diffusion_models", unet) for unet in unets] + [("vae", tiny_wan.VAE)]:
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        (base / "models" / folder / name).symlink_to(wan / name)
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    (base / "input").mkdir()
    write_input_image(base / "input" / INPUT_IMAGE)
    server = ComfyServer(comfyui, base, (*frontend_args(), *args), env)
    client = server.start()
    if "NoiseSearchSampler" not in client.object_info():
        server.stop()
        pytest.fail(f"ComfyUI started but the pack's nodes are missing from /object_info; server log:\n{server.log()}")
    return ComfyEnv(client, server, base, TINY_SD3, verifier_models, INPUT_IMAGE, tiny_wan.MODEL, tiny_wan.MODEL_I2V,
                    tiny_wan.VAE, tiny_wan.MODEL_HIGH, tiny_wan.MODEL_LOW, tiny_wan.MODEL_I2V_HIGH,
                    tiny_wan.MODEL_I2V_LOW)
