"""Searches that span two models (Wan 2.2 A14B: a high-noise expert for the first steps, a low-noise expert for the
rest), as the stock template chains two KSamplerAdvanced nodes: the first returns its latent with the leftover noise
at the switch step, the second adds no noise and finishes the schedule. Every prepared model is a `Stage`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

import comfy.samplers


@dataclass
class Stage:
    """One model's part of the schedule, prepared by its own guider: what a stock sampler call over it is given."""

    model_wrap: object
    extra_args: dict
    sigmas: torch.Tensor  # this stage's schedule on the device, as its stock sampler gets it
    start: int  # index of its first sigma in the search's whole schedule
    denoise_mask: Optional[torch.Tensor]
    max_denoise: bool

    @property
    def end(self) -> int:
        return self.start + len(self.sigmas) - 1

    @property
    def model_sampling(self):
        return self.model_wrap.inner_model.model_sampling

    @property
    def loaded(self) -> list:
        """The models its guider loaded for sampling (what prepare_sampling loads)."""
        return [self.model_wrap.model_patcher] + list(getattr(self.model_wrap, "loaded_models", []))


@dataclass
class Expert:
    """The second model of a search and the step where it takes over."""

    guider: comfy.samplers.CFGGuider
    switch: int  # index in `sigmas`
    sigmas: torch.Tensor  # the whole schedule (CPU)

    def parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The schedule of each stock KSamplerAdvanced: up to the switch step, and from it."""
        return self.sigmas[: self.switch + 1], self.sigmas[self.switch:]


def second_expert(node: str, model, model_2, positive, negative, cfg: float, sigmas: torch.Tensor,
                  switch_step: int, schedule_2: torch.Tensor) -> Expert:
    """Check and build the second expert; `schedule_2` is the schedule the node's inputs give `model_2`, which must
    be the first model's, as both stock KSamplerAdvanced nodes run one schedule split at the switch step."""
    steps = len(sigmas) - 1
    if model_2 is model:
        raise ValueError(f"{node}: model_2 is the same model as model: disconnect model_2 for a one-model search, or "
                         f"connect the low-noise expert")
    if not 1 <= switch_step < steps:
        raise ValueError(f"{node}: switch_step={switch_step} must lie between 1 and steps - 1 = {steps - 1} (the "
                         f"step where model_2 takes over from model, as end_at_step of the first KSamplerAdvanced)")
    formats = [m.get_model_object("latent_format") for m in (model, model_2)]
    if type(formats[0]) is not type(formats[1]) or len({f.latent_channels for f in formats}) != 1:
        raise ValueError(f"{node}: model_2 makes {type(formats[1]).__name__} latents ({formats[1].latent_channels} "
                         f"channels) but model makes {type(formats[0]).__name__} ones ({formats[0].latent_channels}"
                         f"): connect the second expert of the same model family (e.g. Wan 2.2's low-noise model)")
    schedule_2 = schedule_2.detach().to("cpu", torch.float32).flatten()
    if schedule_2.shape != sigmas.shape or not torch.allclose(schedule_2, sigmas, rtol=1e-5, atol=1e-6):
        raise ValueError(f"{node}: model and model_2 give different noise schedules ({_few(sigmas)} against "
                         f"{_few(schedule_2)}): patch both with the same model sampling (e.g. one ModelSamplingSD3 "
                         f"shift on each expert), as the stock two-expert workflow does")
    guider = comfy.samplers.CFGGuider(model_2)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return Expert(guider, int(switch_step), sigmas)


def handoff(before: Stage, after: Stage, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler state `x` at the switch, handed from one stage to the next as the stock chain hands its latent
    over (inverse_noise_scaling and process_latent_out, then process_latent_in and noise_scaling with zero noise);
    returns (the next stage's starting state, its latent_image)."""
    sigma = after.sigmas[0]
    latent = before.model_sampling.inverse_noise_scaling(before.sigmas[-1], x)
    latent = before.model_wrap.inner_model.process_latent_out(latent.to(torch.float32))
    if torch.count_nonzero(latent) > 0:  # CFGGuider.inner_sample leaves an all-zero latent as it is
        latent = after.model_wrap.inner_model.process_latent_in(latent)
    start = after.model_sampling.noise_scaling(sigma, torch.zeros_like(latent), latent, after.max_denoise)
    return start, latent


def _few(sigmas: torch.Tensor) -> str:
    values = [round(float(s), 4) for s in sigmas]
    return str(values if len(values) <= 6 else values[:3] + ["..."] + values[-2:])
