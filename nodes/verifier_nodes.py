"""Load Verifier and Verifier Ensemble: VERIFIER outputs whose weights ComfyUI's model management moves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch

import comfy.model_management
import comfy.model_patcher
import folder_paths
from comfy_api.latest import io

from ..verifiers.base import VerifierError
from ..verifiers.ensemble import MODES, Ensemble
from ..verifiers.frames import FRAME_AGGREGATES
from ..verifiers.grading import MODES as GRADER_MODES
from ..verifiers.loading import KNOWN_MODELS, set_model_dirs
from ..verifiers.registry import KINDS, describe, kind_info, load_verifier
from .samplers import CATEGORY
from .types import LoadedVerifier, VerifierType, VerifierWeights

FOLDER = "verifiers"
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def verifier_dirs() -> list[str]:
    """ComfyUI's models/verifiers folders (and any extra_model_paths ones), also registered with the loaders."""
    dirs = folder_paths.get_folder_paths(FOLDER)
    set_model_dirs(dirs)
    return dirs


def _is_model_dir(path: Path) -> bool:
    return any(p.is_file() and (p.name.endswith(".json") or p.suffix in MODEL_SUFFIXES) for p in path.iterdir())


def local_models() -> list[str]:
    """Model files and model folders (one with a config or weights inside) up to two levels under models/verifiers."""
    found = []
    for root in map(Path, verifier_dirs()):
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir()):
            if entry.is_file() and entry.suffix in MODEL_SUFFIXES:
                found.append(entry.name)
            elif entry.is_dir():
                if _is_model_dir(entry):
                    found.append(entry.name)
                else:
                    found += [f"{entry.name}/{sub.name}" for sub in sorted(entry.iterdir())
                          if (sub.is_file() and sub.suffix in MODEL_SUFFIXES)
                          or (sub.is_dir() and _is_model_dir(sub))]
    return found


def model_options() -> list[str]:
    known = [m.name for m in KNOWN_MODELS if m.verifier not in ("pickscore_processor", "image_reward_tokenizer")]
    known += [describe(kind)["default_model"] for kind in KINDS if not kind_info(kind).remote]
    return list(dict.fromkeys(local_models() + known))


def devices(device: str) -> tuple:
    """(load device, offload device) for the `device` input."""
    mm = comfy.model_management
    if device == "cpu":
        return torch.device("cpu"), torch.device("cpu")
    gpu = mm.get_torch_device()
    if device == "gpu" and mm.is_device_cpu(gpu):
        raise ValueError("Load Verifier: device is 'gpu' but ComfyUI runs on the CPU here: set device to auto or cpu")
    return gpu, mm.unet_offload_device()


def pick_dtype(dtype: str, load_device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return DTYPES[dtype]
    mm = comfy.model_management
    if mm.is_device_cpu(load_device) or not mm.should_use_fp16(load_device, prioritize_performance=False):
        return torch.float32
    return torch.float16


# inputs added after v0.1 (optional, shown only for the kinds that read them) -> the loader option each sets
GRADER_INPUTS = {"grader_mode": "mode", "aspects": "aspects", "base_url": "base_url", "api_model": "model",
                 "api_key_env": "api_key_env", "concurrency": "concurrency", "timeout_s": "timeout",
                 "retries": "retries"}


def kinds_reading(option: str) -> list[str]:
    """The kinds whose loader takes `option` (the `model` argument counts for remote kinds only)."""
    if option == "model":
        return [k for k in KINDS if kind_info(k).remote]
    return [k for k in KINDS if option in describe(k)["options"]]


def grader_options(kind: str, given: dict) -> dict:
    """The grader inputs this kind reads, as loader options; empty text means the loader's default. The others
    are ignored (they stay hidden while this kind is chosen)."""
    options = {}
    for name, option in GRADER_INPUTS.items():
        value = given.get(name)
        if kind not in kinds_reading(option) or value is None:
            continue
        if isinstance(value, str):
            value = value.strip()
            if not value:
                continue
        options[option] = value
    return options


def verifier_options(kind: str, labels: str, target: str, grader: Optional[dict] = None) -> dict:
    """The labels/target inputs (and the grader inputs' options) as loader options, refusing ones this kind does
    not take or misses."""
    info = describe(kind)
    given = {"labels": labels.strip(), "target": target.strip()}
    options = dict(grader or {})
    for name, value in given.items():
        if value and name not in info["options"]:
            raise ValueError(f"Load Verifier: kind '{kind}' takes no {name}: clear the {name} input "
                             f"(only {', '.join(k for k in KINDS if name in describe(k)['options'])} use it)")
        if value:
            options[name] = value
    for name in info["required_options"]:
        if name not in options:
            raise ValueError(f"Load Verifier: kind '{kind}' needs the {name} input ({info['options'].get(name, name)})")
    return options


class NoiseSearchVerifierLoader(io.ComfyNode):
    """Loads a verifier model from models/verifiers (or the Hugging Face cache) for the Noise Search samplers."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        options = model_options()
        kinds = "; ".join(f"{k}: {describe(k)['summary']}" for k in KINDS)
        model = io.Combo.Input("model", options=options, default=describe(KINDS[0])["default_model"],
                               tooltip="A file or folder under models/verifiers, or a known model id (found in the "
                                       "Hugging Face cache, or downloaded with allow_download).")
        model.extra_dict["noise_search_for"] = [k for k in KINDS
                                                if not (kind_info(k).remote or kind_info(k).model_free)]
        return io.Schema(
            node_id="NoiseSearchVerifierLoader",
            display_name="Load Verifier",
            category=CATEGORY,
            description="Loads a verifier that scores images (higher is better) for the Noise Search samplers. "
                        "Models are looked up in models/verifiers, then the Hugging Face cache; nothing is "
                        "downloaded unless allow_download is on.",
            inputs=[
                io.Combo.Input("kind", options=list(KINDS), default=KINDS[0], tooltip=f"What to score. {kinds}"),
                model,
                io.Combo.Input("device", options=["auto", "cpu", "gpu"], default="auto",
                               tooltip="auto: ComfyUI's device, offloaded when idle. cpu: always on the CPU."),
                io.Combo.Input("dtype", options=["auto", "fp32", "fp16", "bf16"], default="auto",
                               tooltip="auto: fp16 on GPUs that run it well, fp32 otherwise."),
                io.Boolean.Input("allow_download", default=False,
                                 tooltip="Download a known model from Hugging Face when it is not found locally."),
                io.String.Input("labels", multiline=True, default="",
                                tooltip="clip_zero_shot only: class names, one per line or comma-separated."),
                io.String.Input("target", default="",
                                tooltip="clip_zero_shot / dino_classifier: the class to reward (label text or index)."),
                *grader_inputs(),
                *frame_inputs(),
            ],
            outputs=[VerifierType.Output("verifier", display_name="verifier")],
        )

    @classmethod
    def execute(cls, kind, model, device, dtype, allow_download, labels, target, frames: int = 4,
                frame_aggregate: str = "mean", **grader) -> io.NodeOutput:
        verifier_dirs()
        options = verifier_options(kind, labels, target, grader_options(kind, grader))
        model = None if kind_info(kind).model_free else options.pop("model", model)
        if kind_info(kind).remote and not model:
            raise ValueError(f"Load Verifier: kind '{kind}' needs the api_model input: the model name the server "
                             f"at base_url serves")
        load_device, offload_device = devices(device)
        torch_dtype = pick_dtype(dtype, load_device)
        try:
            verifier = load_verifier(kind, model, device=offload_device, dtype=torch_dtype,
                                     allow_download=bool(allow_download), **options)
        except VerifierError as e:
            raise ValueError(f"Load Verifier: {e}") from e
        patcher = comfy.model_patcher.ModelPatcher(VerifierWeights(verifier.model), load_device=load_device,
                                                   offload_device=offload_device)
        return io.NodeOutput(LoadedVerifier(verifier=verifier, patchers=[patcher], label=verifier.name,
                                            frames=int(frames), frame_aggregate=frame_aggregate))


def frame_inputs() -> list:
    """How a video is scored: optional, after every earlier input (saved workflows keep their widget order)."""
    return [
        io.Int.Input("frames", default=4, min=1, max=1024, optional=True,
                     tooltip="Video searches only: frames scored per video, spread evenly from the first to the last "
                             "(3 = first, middle and last). Images ignore it."),
        io.Combo.Input("frame_aggregate", options=list(FRAME_AGGREGATES), default="mean", optional=True,
                       tooltip="Video searches only: a video's score is the mean of its frames' scores, or the "
                               "worst (min), which punishes a clip that falls apart anywhere."),
    ]


def grader_inputs() -> list:
    """Optional inputs of the grader kinds, after every v0.1 input; each carries the kinds that read it."""
    inputs = [
        io.Combo.Input("grader_mode", options=list(GRADER_MODES), default=GRADER_MODES[0], optional=True,
                       tooltip="vlm_grader / api_grader: vqascore = the probability the model answers Yes to 'does "
                               "this image show the prompt?' (Lin et al. 2024; one forward pass). aspects = the "
                               "paper's grader: 0-10 ratings of named aspects, their mean is the score."),
        io.String.Input("aspects", multiline=True, default="", optional=True,
                        tooltip="aspects mode: the aspects to rate, one per line or comma-separated; empty = the "
                                "paper's five (accuracy to prompt, creativity and originality, visual quality and "
                                "realism, consistency and cohesion, emotional or thematic resonance)."),
        io.String.Input("base_url", default="", optional=True,
                        tooltip="api_grader: the OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1 (Ollama), "
                                "http://127.0.0.1:1234/v1 (LM Studio), http://127.0.0.1:8000/v1 (vLLM). Images go to "
                                "this URL only; nothing is sent while it is empty."),
        io.String.Input("api_model", default="", optional=True,
                        tooltip="api_grader: the model name the server serves (e.g. qwen2.5vl:7b)."),
        io.String.Input("api_key_env", default="", optional=True,
                        tooltip="api_grader: the NAME of the environment variable that holds the API key (the key "
                                "never enters the workflow); empty = no key (local servers)."),
        io.Int.Input("concurrency", default=4, min=1, max=64, optional=True,
                     tooltip="api_grader: requests in flight at once."),
        io.Float.Input("timeout_s", default=120.0, min=1.0, max=3600.0, step=1.0, optional=True,
                       tooltip="api_grader: seconds to wait for one answer."),
        io.Int.Input("retries", default=2, min=0, max=10, optional=True,
                     tooltip="api_grader: retries of a failed request (timeouts, 429, 5xx), with backoff."),
    ]
    for inp in inputs:
        inp.extra_dict["noise_search_for"] = kinds_reading(GRADER_INPUTS[inp.id])
    return inputs


def parse_weights(text: str, count: int):
    """'' -> None (equal weights); else `count` numbers separated by commas or spaces."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        return None
    try:
        weights = [float(p) for p in parts]
    except ValueError as e:
        raise ValueError(f"Verifier Ensemble: weights must be numbers separated by commas, got '{text}'") from e
    if len(weights) != count:
        raise ValueError(f"Verifier Ensemble: {count} verifiers are connected but weights has {len(weights)} "
                         f"number(s): give one weight per connected verifier, in input order, or leave it empty")
    return weights


class NoiseSearchVerifierEnsemble(io.ComfyNode):
    """Combines 2-4 verifiers by rank or z-score (the paper's verifier ensembles)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NoiseSearchVerifierEnsemble",
            display_name="Verifier Ensemble",
            category=CATEGORY,
            description="Scores with several verifiers and combines them: rank averages each verifier's percentile "
                        "among all final candidates of the search, zscore averages standardised scores (Ma et al., "
                        "2025, Sec. 4.1).",
            inputs=[
                VerifierType.Input("verifier_1", tooltip="First verifier."),
                VerifierType.Input("verifier_2", tooltip="Second verifier."),
                VerifierType.Input("verifier_3", optional=True, tooltip="Optional third verifier."),
                VerifierType.Input("verifier_4", optional=True, tooltip="Optional fourth verifier."),
                io.String.Input("weights", default="",
                                tooltip="One weight per connected verifier in input order, e.g. '1, 2'; "
                                        "empty = equal."),
                io.Combo.Input("mode", options=list(MODES), default="rank",
                               tooltip="rank: average percentile ranks (robust to scale). zscore: average z-scores."),
            ],
            outputs=[VerifierType.Output("verifier", display_name="verifier")],
        )

    @classmethod
    def execute(cls, verifier_1, verifier_2, weights, mode, verifier_3=None, verifier_4=None) -> io.NodeOutput:
        handles = [v for v in (verifier_1, verifier_2, verifier_3, verifier_4) if v is not None]
        for i, h in enumerate(handles):
            if not isinstance(h, LoadedVerifier):
                raise ValueError(f"Verifier Ensemble: input {i + 1} is not a VERIFIER from Load Verifier "
                                 "or an ensemble")
        try:
            ensemble = Ensemble([h.verifier for h in handles], weights=parse_weights(weights, len(handles)), mode=mode)
        except VerifierError as e:
            raise ValueError(f"Verifier Ensemble: {e}") from e
        frames = {(h.frames, h.frame_aggregate) for h in handles}
        if len(frames) > 1:
            raise ValueError(f"Verifier Ensemble: its verifiers score videos differently (frames, frame_aggregate: "
                             f"{sorted(frames)}); a video's frames are scored once for all members, so set the same "
                             f"frames and frame_aggregate on every Load Verifier")
        patchers = list({id(p): p for h in handles for p in h.patchers}.values())
        (count, how), = frames
        return io.NodeOutput(LoadedVerifier(verifier=ensemble, patchers=patchers, label="ensemble", frames=count,
                                            frame_aggregate=how))
