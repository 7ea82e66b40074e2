"""Running a user's k-diffusion sampler over K candidate rows: the counting denoiser and the exact NFE count of a
sigma slice (a dry run with a zero denoiser)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Callable, Optional, Sequence

import torch

import comfy.model_management
import comfy.samplers

# k-diffusion samplers whose default noise sampler is a Brownian tree (value: tree kept on the CPU).
BROWNIAN = {
    "sample_dpmpp_sde": True, "sample_dpmpp_2m_sde": True, "sample_dpmpp_2m_sde_heun": True,
    "sample_dpmpp_3m_sde": True, "sample_dpmpp_sde_gpu": False, "sample_dpmpp_2m_sde_gpu": False,
    "sample_dpmpp_2m_sde_heun_gpu": False, "sample_dpmpp_3m_sde_gpu": False,
}
# Samplers whose number of model calls depends on the model's outputs: no exact NFE count exists.
ADAPTIVE = {"dpm_adaptive_function", "sample_dpm_adaptive"}


def function_name(fn: Callable) -> str:
    while hasattr(fn, "func"):  # functools.partial
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


def takes_noise_sampler(fn: Callable) -> bool:
    """Whether the sampler function accepts a `noise_sampler` keyword (all ancestral/SDE k-diffusion samplers do)."""
    try:
        return "noise_sampler" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class Pause(BaseException):
    """Raised out of a sampler run at a planned model call; `x` is the sampler's state it was called with.
    A BaseException, so a sampler that catches Exception cannot swallow it."""

    def __init__(self, x: torch.Tensor):
        super().__init__("paused")
        self.x = x


class SearchDenoiser(comfy.samplers.KSamplerX0Inpaint):
    """KSamplerX0Inpaint over candidate rows: checks Cancel before every model call, counts calls (NFEs) and
    keeps the last x0 prediction; `on_eval(sigma, x0)` sees every evaluation.

    To continue a paused run exactly, the sampler runs again from the start: the first calls return `replay`
    (their recorded outputs, no model call) and call `stop_at` raises Pause; `recorded` keeps the live outputs
    (on the CPU) when `record` is set.
    """

    def __init__(self, model_wrap, sigmas: torch.Tensor, latent_image: torch.Tensor, noise: Optional[torch.Tensor],
                 on_eval: Optional[Callable] = None, replay: Sequence[torch.Tensor] = (),
                 stop_at: Optional[int] = None, record: bool = False):
        super().__init__(model_wrap, sigmas)
        self.latent_image = latent_image
        self.noise = noise
        self.on_eval = on_eval
        self.replay, self.stop_at, self.record = replay, stop_at, record
        self.recorded: list = []
        self.calls = 0
        self.x0: Optional[torch.Tensor] = None

    @property
    def live_calls(self) -> int:
        return self.calls - min(self.calls, len(self.replay))

    def __call__(self, x, sigma, denoise_mask, model_options={}, seed=None):  # noqa: B006 (ComfyUI's signature)
        comfy.model_management.throw_exception_if_processing_interrupted()
        if self.calls == self.stop_at:
            raise Pause(x)
        if self.calls < len(self.replay):
            out = self.replay[self.calls].to(x.device)
        else:
            out = super().__call__(x, sigma, denoise_mask, model_options=model_options, seed=seed)
            if self.record:
                self.recorded.append(out.detach().to("cpu"))
        self.calls += 1
        self.x0 = out
        if self.on_eval is not None:
            self.on_eval(sigma, out)
        return out


class _DryRunDenoiser:
    """Counts calls and returns a zero x0 (passed through post-CFG hooks, which CFG++ samplers rely on)."""

    def __init__(self, model_sampling, model_patcher):
        self.inner_model = SimpleNamespace(inner_model=SimpleNamespace(model_sampling=model_sampling),
                                           model_patcher=model_patcher)
        self.calls = 0

    def __call__(self, x, sigma, denoise_mask=None, model_options={}, seed=None):  # noqa: B006 (as ComfyUI's)
        self.calls += 1
        out = torch.zeros_like(x)
        for fn in model_options.get("sampler_post_cfg_function", []):
            out = fn({"denoised": out, "cond": None, "uncond": None, "cond_scale": 1.0, "model": None,
                      "uncond_denoised": out, "cond_denoised": out, "sigma": sigma, "model_options": model_options,
                      "input": x})
        return out


class NfeCounter:
    """cost(sigmas) for SearchProblem: the exact model calls `sampler` makes over a slice, from a dry run
    on a 1-element latent with a zero denoiser; cached per slice. A slice across `switch` (the sigma where a second
    model takes over) is two sampler runs, one per model, and costs what both make."""

    def __init__(self, sampler, model_sampling, model_patcher, switch: Optional[float] = None):
        self.sampler = sampler
        self.model_sampling = model_sampling
        self.model_patcher = model_patcher
        self.switch = switch
        self._cache: dict = {}

    def __call__(self, sigmas: torch.Tensor) -> int:
        key = tuple(float(s) for s in sigmas)
        if self.switch in key[1:-1]:
            at = key.index(self.switch)
            return self(torch.tensor(key[: at + 1])) + self(torch.tensor(key[at:]))
        if key not in self._cache:
            self._cache[key] = self._count(torch.tensor(key, dtype=torch.float32))
        return self._cache[key]

    def _count(self, sigmas: torch.Tensor) -> int:
        fn = self.sampler.sampler_function
        model = _DryRunDenoiser(self.model_sampling, self.model_patcher)
        x = torch.zeros((1, 1, 1, 1))
        kwargs = dict(self.sampler.extra_options)
        if takes_noise_sampler(fn) and kwargs.get("noise_sampler") is None:
            kwargs["noise_sampler"] = lambda sigma, sigma_next: torch.zeros_like(x)
        extra_args = {"model_options": {"transformer_options": {}}, "seed": 0, "denoise_mask": None}
        fn(model, x, sigmas, extra_args=extra_args, callback=None, disable=True, **kwargs)
        return model.calls
