"""The two search samplers: KSampler-style inputs, and SamplerCustomAdvanced-style inputs
(NOISE/GUIDER/SAMPLER/SIGMAS)."""

from __future__ import annotations

from dataclasses import fields
from typing import Optional

import comfy.samplers
from comfy_api.latest import io

from .comfy_search import run_node_search
from .experts import second_expert
from .settings import SearchSettings, search_inputs, search_outputs
from .workers import Distributed, WorkerSpec, workers_input

CATEGORY = "sampling/noise search"
_SETTING_NAMES = tuple(f.name for f in fields(SearchSettings) if f.name != "node")


def _settings(node: str, kwargs: dict) -> SearchSettings:
    return SearchSettings(node=node, **{k: kwargs[k] for k in _SETTING_NAMES if k in kwargs})  # optional: defaults


def _ksampler(model, steps: int, sampler_name: str, scheduler: str, denoise: float) -> comfy.samplers.KSampler:
    """The stock KSampler of these inputs: its sigmas are the schedule KSampler would run."""
    return comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                   scheduler=scheduler, denoise=denoise, model_options=model.model_options)


def unique_id(cls) -> Optional[str]:
    """A V3 node's own id in the running prompt (None when called outside an execution)."""
    return cls.hidden.unique_id if cls.hidden is not None else None


def spread(cls, workers: Optional[WorkerSpec]) -> Optional[Distributed]:
    """A search over `workers`: they rebuild this node's inputs from the running prompt (ComfyUI's hidden PROMPT)."""
    if workers is None:
        return None
    graph = cls.hidden.prompt if cls.hidden is not None else None
    if graph is None or unique_id(cls) is None:
        raise ValueError(f"{cls.DISPLAY}: the workers input needs the running workflow, which ComfyUI gives a node "
                         f"only when it executes a prompt: queue the workflow rather than calling the node directly")
    return Distributed(workers, graph, unique_id(cls), cls.__name__)


class NoiseSearchSampler(io.ComfyNode):
    """KSampler that tries several initial noises and keeps the one the verifier scores highest."""

    DISPLAY = "Noise Search Sampler"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NoiseSearchSampler",
            display_name=cls.DISPLAY,
            category=CATEGORY,
            description="A KSampler that searches for a better initial noise (Ma et al., 2025): it samples several "
                        "candidates, decodes and scores them with the verifier, and outputs the best. Candidate i of "
                        "random search is exactly a KSampler run with seed + i.",
            inputs=[
                io.Model.Input("model", tooltip="The model used for denoising."),
                io.Conditioning.Input("positive", tooltip="What to include in the image."),
                io.Conditioning.Input("negative", tooltip="What to exclude from the image."),
                io.Latent.Input("latent_image",
                                tooltip="The latent to denoise; every batch item is searched on its own."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Base seed: random search tries seed, seed+1, ...; candidate 0 is the plain "
                                     "KSampler result for this seed."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Denoising steps per candidate."),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (a cond/uncond pair counts as one NFE)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS,
                               tooltip="The sampling algorithm, as in KSampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS,
                               tooltip="The noise schedule, as in KSampler."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Less than 1 keeps part of the input latent (image to image)."),
                *search_inputs(),
                io.Model.Input("model_2", optional=True,
                               tooltip="A second expert that takes over at switch_step (Wan 2.2 A14B's low-noise "
                                       "model): every candidate runs through both, as two chained KSamplerAdvanced "
                                       "nodes with seed + i run it. Leave unconnected for one model."),
                io.Int.Input("switch_step", default=10, min=1, max=10000, optional=True,
                             tooltip="With model_2: the step where model_2 takes over (end_at_step of the first "
                                     "KSamplerAdvanced, start_at_step of the second); unused without model_2."),
                workers_input(),
            ],
            outputs=search_outputs(),
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, denoise,
                vae, verifier, prompt, model_2=None, switch_step=10, workers=None, **settings) -> io.NodeOutput:
        inputs = cls.search_inputs(model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler,
                                   denoise, vae, verifier, prompt, model_2, switch_step, **settings)
        return io.NodeOutput(*run_node_search(node_id=unique_id(cls), workers=spread(cls, workers), **inputs))

    @classmethod
    def search_inputs(cls, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler,
                      denoise, vae, verifier, prompt, model_2=None, switch_step=10, **settings) -> dict:
        """The node's inputs as run_node_search takes them (a worker rebuilds them from the same inputs)."""
        node = cls.DISPLAY
        ksampler = _ksampler(model, steps, sampler_name, scheduler, denoise)
        if len(ksampler.sigmas) < 2:
            raise ValueError(f"{node}: denoise={denoise} leaves no steps to sample: raise denoise above 0")
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        expert = None
        if model_2 is not None:
            schedule_2 = _ksampler(model_2, steps, sampler_name, scheduler, denoise).sigmas
            expert = second_expert(node, model, model_2, positive, negative, cfg, ksampler.sigmas.cpu(),
                                   switch_step, schedule_2)
        return dict(node=node, guider=guider, sampler=comfy.samplers.sampler_object(sampler_name),
                    sampler_input="sampler_name", sigmas=ksampler.sigmas, latent=latent_image, seed=seed, vae=vae,
                    verifier=verifier, prompt=prompt, settings=_settings(node, settings), expert=expert)


class NoiseSearchSamplerCustom(io.ComfyNode):
    """SamplerCustomAdvanced that searches over initial noises: any guider, k-diffusion sampler and sigmas."""

    DISPLAY = "Noise Search Sampler (Custom)"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NoiseSearchSamplerCustom",
            display_name=cls.DISPLAY,
            category=CATEGORY,
            description="SamplerCustomAdvanced with a noise search: works with any guider (CFG, Basic, DualCFG, "
                        "...), k-diffusion sampler and sigmas. Candidate i of random search is SamplerCustomAdvanced "
                        "with RandomNoise seed + i.",
            inputs=[
                io.Noise.Input("noise", tooltip="A RandomNoise node: its seed is the search's base seed."),
                io.Guider.Input("guider", tooltip="The guider (model and conditioning) used for every candidate."),
                io.Sampler.Input("sampler", tooltip="A k-diffusion sampler (KSamplerSelect or a Sampler* node)."),
                io.Sigmas.Input("sigmas", tooltip="The schedule every candidate follows (split sigmas for img2img)."),
                io.Latent.Input("latent_image",
                                tooltip="The latent to denoise; every batch item is searched on its own."),
                *search_inputs(),
                workers_input(),
            ],
            outputs=search_outputs(),
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def execute(cls, noise, guider, sampler, sigmas, latent_image, vae, verifier, prompt, workers=None,
                **settings) -> io.NodeOutput:
        inputs = cls.search_inputs(noise, guider, sampler, sigmas, latent_image, vae, verifier, prompt, **settings)
        return io.NodeOutput(*run_node_search(node_id=unique_id(cls), workers=spread(cls, workers), **inputs))

    @classmethod
    def search_inputs(cls, noise, guider, sampler, sigmas, latent_image, vae, verifier, prompt, **settings) -> dict:
        """The node's inputs as run_node_search takes them (a worker rebuilds them from the same inputs)."""
        node = cls.DISPLAY
        if type(noise).__name__ != "Noise_RandomNoise":  # ComfyUI loads comfy_extras under its own module names
            raise ValueError(f"{node}: the noise input must carry a seed to search from, but {type(noise).__name__} "
                             f"has none (DisableNoise and custom noises cannot be searched): connect a RandomNoise "
                             f"node")
        return dict(node=node, guider=guider, sampler=sampler, sampler_input="sampler", sigmas=sigmas,
                    latent=latent_image, seed=noise.seed, vae=vae, verifier=verifier, prompt=prompt,
                    settings=_settings(node, settings))
