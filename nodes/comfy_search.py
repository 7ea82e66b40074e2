"""ComfyUI -> SearchProblem: a whole noise search runs inside one `guider.sample(...)` call per latent item.

`SearchSampler` is handed to the guider in place of the user's SAMPLER. The guider prepares the model, the
conditioning and the latent exactly as for a normal run, then calls `SearchSampler.sample`, which integrates
K candidate rows at a time with the user's sampler function (what KSAMPLER.sample does for one row), decodes
and scores them, and returns the winner for the guider's usual `process_latent_out`.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, Sequence

import torch

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils

from ..search import BudgetError, estimate_nfe, run_search
from ..search.noise import RENOISE, seeded_noise
from ..search.report import SearchReport
from ..search.types import Candidate, SearchProblem, SearchResult
from ..verifiers.base import VerifierError
from .denoise import ADAPTIVE, NfeCounter, SearchDenoiser, function_name, row_noise_sampler, takes_noise_sampler
from .types import LoadedVerifier, SearchNoise

FRESH_KINDS = ("initial", "neighbour")  # candidates whose rows are raw initial noises at the schedule start
CPU_ROWS = 4  # auto batch size on the CPU


def noising_kernel(model_sampling) -> str:
    """Search over Paths' forward kernel: rectified flow for CONST models (SD3, Flux), VE otherwise."""
    return "flow" if isinstance(model_sampling, comfy.model_sampling.CONST) else "ve"


def reference_target(model_sampling, reference_sigma: float) -> float:
    """The model sigma whose signal-to-noise ratio equals flow time `reference_sigma` (t/(1-t) for VE models)."""
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        return float(reference_sigma)
    return float(reference_sigma) / max(1e-6, 1.0 - float(reference_sigma))


def auto_rows(model_wrap, shape: Sequence[int]) -> int:
    """Rows per model call that fit in free memory (a CFG pair per row), or CPU_ROWS on the CPU."""
    device = model_wrap.model_patcher.load_device
    if comfy.model_management.is_device_cpu(device):
        return CPU_ROWS
    per_row = model_wrap.inner_model.memory_required([2] + list(shape[1:]))
    free = comfy.model_management.get_free_memory(device)
    return int(max(1, min(64, (free * 0.8) // max(per_row, 1))))


class Scorer:
    """Decodes latents with the VAE and scores them; keeps every final candidate's image and latent."""

    def __init__(self, vae, handle: LoadedVerifier, prompt: Optional[str]):
        self.vae = vae
        self.handle = handle
        self.prompt = prompt
        self.images: dict = {}
        self.latents: dict = {}

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode(latents)
        if images.ndim == 5:
            if images.shape[1] != 1:
                raise ValueError(f"the VAE decoded {images.shape[1]} frames per candidate: Noise Search scores "
                                 f"single images, not videos")
            images = images[:, 0]
        return images.to("cpu", torch.float32)

    def score(self, images: torch.Tensor, references: Optional[torch.Tensor]):
        self.handle.load()
        verifier = self.handle.verifier
        scores = verifier.score(images, self.prompt, references)
        members = verifier.member_scores()
        return (scores, members) if members else scores


class SearchSampler(comfy.samplers.Sampler):
    """A Sampler that runs a noise search (see module docstring); the result is left in `self.result`."""

    def __init__(self, *, sampler, algorithm: str, config: dict, seed: int, noise, cost: Callable, scorer: Scorer,
                 batch_size: int, progress: Optional[Callable] = None):
        self.user = sampler
        self.algorithm = algorithm
        self.config = dict(config)
        self.seed = int(seed)
        self.noise = noise  # NoiseSource: index -> [*shape] on the CPU
        self.cost = cost
        self.scorer = scorer
        self.batch_size = int(batch_size)
        self.progress = progress
        self.result: Optional[SearchResult] = None

    def max_denoise(self, model_wrap, sigmas):
        return self.user.max_denoise(model_wrap, sigmas)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        run = _Run(self, model_wrap, sigmas, extra_args, noise, latent_image, denoise_mask)
        problem = SearchProblem(
            integrate=run.integrate, score=run.score, sigmas=run.sigmas_cpu, noise=self.noise,
            renoise=RENOISE[noising_kernel(run.model_sampling)], cost=self.cost,
            max_batch=self.batch_size or auto_rows(model_wrap, noise.shape), progress=self.progress,
            device=noise.device, aggregate=getattr(self.scorer.handle.verifier, "aggregate", None))
        result = run_search(self.algorithm, problem, **self.config)
        best = result.best.unsqueeze(0).to(noise.device)
        self.result = run.finish(result)
        return run.model_sampling.inverse_noise_scaling(sigmas[-1], best)


class _Run:
    """State of one search inside SearchSampler.sample: the guider's model, conds-ready extra_args, latent, mask."""

    def __init__(self, owner: SearchSampler, model_wrap, sigmas, extra_args, noise, latent_image, denoise_mask):
        self.owner = owner
        self.model_wrap = model_wrap
        self.sigmas = sigmas
        self.sigmas_cpu = sigmas.detach().to("cpu", torch.float32)
        self.sigma_end = float(self.sigmas_cpu[-1])
        self.extra_args = extra_args
        self.device, self.dtype = noise.device, noise.dtype
        self.latent_image = latent_image
        self.denoise_mask = denoise_mask
        self.model_sampling = model_wrap.inner_model.model_sampling
        self.max_denoise = owner.max_denoise(model_wrap, sigmas)
        self.fn = owner.user.sampler_function
        self.keep_loaded = [model_wrap.model_patcher] + list(getattr(model_wrap, "loaded_models", []))
        self.root_noise: dict = {}  # candidate id -> its initial noise row (kept only for inpainting masks)
        verifier = owner.scorer.handle.verifier
        self.needs_reference = "reference" in verifier.needs
        self.reference_sigma = (reference_target(self.model_sampling, verifier.reference_sigma)
                                if self.needs_reference else None)
        self.references: dict = {}  # candidate id -> (|sigma - target|, x0 row on the CPU)
        self.scored = False
        self.notes: list = []
        self.mismatch: set = set()
        module = getattr(self.fn, "__module__", "") or ""
        if not takes_noise_sampler(self.fn) and not module.startswith("comfy."):
            self.notes.append(f"sampler {function_name(self.fn)} takes no noise_sampler: if it draws random noise, "
                              f"rows share it and results depend on batch_size")

    @staticmethod
    def rows(t: Optional[torch.Tensor], k: int) -> Optional[torch.Tensor]:
        """The item's batch-1 latent or mask repeated for k candidate rows."""
        if t is None:
            return None
        return t.expand(k, *t.shape[1:]).contiguous()

    def integrate(self, x: torch.Tensor, sigmas: torch.Tensor, batch: Sequence[Candidate]):
        if self.scored:
            comfy.model_management.load_models_gpu(self.keep_loaded)
            self.scored = False
        k = len(batch)
        fresh = {c.kind in FRESH_KINDS for c in batch}
        if len(fresh) != 1:
            raise RuntimeError("internal: a chunk mixes fresh noises and partial trajectories")
        fresh = fresh.pop()
        x = x.to(self.device, self.dtype)
        sig = sigmas.to(self.device)
        latent = self.rows(self.latent_image, k)
        if fresh:
            if float(sigmas[0]) != float(self.sigmas_cpu[0]):
                raise RuntimeError("internal: fresh noises must start at the start of the schedule")
            if self.denoise_mask is not None:
                self.root_noise.update({c.id: row for c, row in zip(batch, x)})
            x = self.model_sampling.noise_scaling(sig[0], x, latent, self.max_denoise)
        else:
            for c in batch:
                if c.parent in self.root_noise:
                    self.root_noise[c.id] = self.root_noise[c.parent]
                if c.parent in self.references:
                    self.references.setdefault(c.id, self.references[c.parent])
        seeds = [self.owner.seed + c.id for c in batch]
        model_k = SearchDenoiser(self.model_wrap, self.sigmas, latent, self._inpaint_noise(batch, seeds),
                                 on_eval=self._capture(batch) if self.needs_reference else None)
        extra_args = dict(self.extra_args)
        extra_args["denoise_mask"] = self.rows(self.denoise_mask, k)
        kwargs = dict(self.owner.user.extra_options)
        if takes_noise_sampler(self.fn) and kwargs.get("noise_sampler") is None:
            kwargs["noise_sampler"] = row_noise_sampler(self.fn, x, sig, seeds)
        x_end = self.fn(model_k, x, sig, extra_args=extra_args, callback=None, disable=True, **kwargs)
        expected = self.owner.cost(sigmas)
        if model_k.calls != expected:
            self.mismatch.add((model_k.calls, expected))
        if model_k.x0 is None:
            raise RuntimeError(f"the sampler made no model call over sigmas {sigmas.tolist()}")
        return x_end, model_k.x0

    def _inpaint_noise(self, batch: Sequence[Candidate], seeds: Sequence[int]) -> Optional[torch.Tensor]:
        """What KSAMPLER gives KSamplerX0Inpaint as `noise` (used with a mask only): the initial noise, or a fresh
        one seeded seed + 1 for samplers with inpaint_options random (ddim)."""
        if self.denoise_mask is None:
            return None
        if getattr(self.owner.user, "inpaint_options", {}).get("random", False):
            shape = (1,) + tuple(self.latent_image.shape[1:])
            rows = [torch.randn(shape, generator=torch.Generator().manual_seed((s + 1) % 2**64)) for s in seeds]
            return torch.cat(rows).to(self.device, self.dtype)
        return torch.stack([self.root_noise[c.id] for c in batch])

    def _capture(self, batch: Sequence[Candidate]) -> Callable:
        """Keep, per candidate, the x0 prediction made closest to the verifier's reference sigma."""
        def on_eval(sigma, x0):
            distance = abs(float(sigma.flatten()[0]) - self.reference_sigma)
            for c, row in zip(batch, x0):
                if c.id not in self.references or distance <= self.references[c.id][0]:
                    self.references[c.id] = (distance, row.detach().to("cpu"))
        return on_eval

    def user_latent(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        """Final states or x0 predictions -> the latent space VAE Decode expects."""
        x = x.to(self.device)
        if final:
            x = self.model_sampling.inverse_noise_scaling(self.sigmas[-1], x)
        return self.model_wrap.inner_model.process_latent_out(x.to(torch.float32))

    def score(self, x: torch.Tensor, sigma: float, batch: Sequence[Candidate]):
        scorer = self.owner.scorer
        final = sigma == self.sigma_end
        latents = self.user_latent(x, final)
        images = scorer.decode(latents)
        references = None
        if self.needs_reference:
            refs = torch.stack([self.references[c.id][1] for c in batch])
            references = scorer.decode(self.model_wrap.inner_model.process_latent_out(refs.to(self.device)))
        self.scored = True
        out = scorer.score(images, references)
        if final:
            for c, image, latent in zip(batch, images, latents):
                scorer.images[c.id] = image
                scorer.latents[c.id] = latent.detach().to("cpu")
        return out

    def finish(self, result: SearchResult) -> SearchResult:
        """Move the result into the user-facing latent space and add what this run knows."""
        scorer = self.owner.scorer
        result.best = scorer.latents[result.best_id]
        result.topk = torch.stack([scorer.latents[i] for i in result.topk_ids])
        for calls, expected in sorted(self.mismatch):
            self.notes.append(f"NFE count drifted: the sampler made {calls} model calls where its dry run "
                              f"counted {expected}")
        result.notes.extend(self.notes)
        return result


ITEM_SEED_STRIDE = 2**32  # latent batch item b searches with seed + b * stride, so items never share noises


def check_sampler(node: str, sampler, input_name: str) -> None:
    """Only k-diffusion samplers (a sampler_function run by KSAMPLER) can be run on arbitrary candidate rows."""
    fn = getattr(sampler, "sampler_function", None)
    if not callable(fn) or not isinstance(getattr(sampler, "extra_options", None), dict):
        raise ValueError(f"{node}: the {input_name} input must be a k-diffusion sampler (KSamplerSelect or one of the "
                         f"Sampler* nodes); {type(sampler).__name__} runs its own loop, which cannot be searched")
    if function_name(fn) in ADAPTIVE:
        raise ValueError(f"{node}: {input_name} dpm_adaptive picks its steps from the model's outputs, so the NFEs of "
                         f"a candidate cannot be known before running it: choose another sampler")


def check_verifier(node: str, handle, prompt: Optional[str]) -> None:
    if not isinstance(handle, LoadedVerifier):
        raise ValueError(f"{node}: the verifier input must come from Load Verifier or Verifier Ensemble, "
                         f"got {type(handle).__name__}")
    needs_ref = "reference" in handle.verifier.needs
    try:
        handle.verifier.check(prompt, torch.zeros(0) if needs_ref else None)
    except VerifierError as e:
        raise ValueError(f"{node}: {e}") from e


def plan(node: str, settings, sigmas: torch.Tensor, cost: Callable) -> int:
    """NFEs one latent item will spend; refuses a budget that cannot pay for the smallest run."""
    try:
        return estimate_nfe(settings.algorithm, sigmas, cost, settings.budget, **_algorithm_config(settings))
    except BudgetError as e:
        unit = cost(sigmas)
        smallest = estimate_nfe(settings.algorithm, sigmas, cost, None, **_algorithm_config(settings, smallest=True))
        raise ValueError(
            f"{node}: budget_nfe={settings.budget_nfe} is too small for {settings.algorithm} search: one candidate "
            f"over these {len(sigmas) - 1} steps costs {unit} NFEs with this sampler, and the smallest "
            f"{settings.algorithm} run costs {smallest}. Raise budget_nfe to at least {smallest}, or set it to 0 "
            f"for no limit.") from e


def _algorithm_config(settings, smallest: bool = False) -> dict:
    config = settings.smallest() if smallest else settings.config()
    return {k: v for k, v in config.items() if k not in ("budget_nfe", "top_k")}


def item_mask(mask: Optional[torch.Tensor], samples: torch.Tensor, b: int) -> Optional[torch.Tensor]:
    """Item b's noise mask, as ComfyUI's repeat_to_batch_size would have paired it with the batch."""
    if mask is None or samples.ndim != 4:
        return mask
    m = mask.reshape(-1, mask.shape[-2], mask.shape[-1])
    return m[b % m.shape[0]: b % m.shape[0] + 1]


def _send_text(text: str, node_id: Optional[str]) -> None:
    server = getattr(sys.modules.get("server"), "PromptServer", None)
    instance = getattr(server, "instance", None)
    if node_id is not None and instance is not None and hasattr(instance, "send_progress_text"):
        instance.send_progress_text(text, node_id)


def _preview(image: torch.Tensor):
    from PIL import Image
    from comfy.cli_args import LatentPreviewMethod, args

    if args.preview_method == LatentPreviewMethod.NoPreviews:
        return None
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return "JPEG", Image.fromarray(array), args.preview_size


def make_progress(pbar, done_before: int, scorer: Scorer, node_id: Optional[str], item: int, items: int) -> Callable:
    """SearchProblem.progress: the node's progress bar in NFEs, a preview of the best image, the best score."""
    shown = {"id": None}

    def progress(nfe: int, planned: int, best_score, best) -> None:
        preview = None
        if best is not None and best.id != shown["id"] and best.id in scorer.images:
            shown["id"] = best.id
            preview = _preview(scorer.images[best.id])
        pbar.update_absolute(done_before + nfe, None, preview)
        where = f"item {item + 1}/{items}: " if items > 1 else ""
        best_text = "no final candidate yet" if best is None else f"best {best_score:.4f} (candidate {best.id})"
        _send_text(f"Noise Search {where}{best_text}, {nfe}/{planned} NFE", node_id)

    return progress


def root_id(result: SearchResult) -> int:
    """The initial candidate a Paths winner descends from (whose noise is `best_noise`)."""
    parents = {c.id: c.parent for c in result.candidates}
    cid = result.best_id
    while parents.get(cid) is not None:
        cid = parents[cid]
    return cid


def run_node_search(*, node: str, node_id: Optional[str], guider, sampler, sampler_input: str, sigmas, latent: dict,
                    seed: int, vae, verifier, prompt: Optional[str], settings) -> tuple:
    """Search every latent batch item; return (latent, image, top_k, noise, report) as the nodes output them."""
    start = time.perf_counter()
    check_verifier(node, verifier, prompt)
    check_sampler(node, sampler, sampler_input)
    sigmas = sigmas.detach().to("cpu", torch.float32).flatten()
    if len(sigmas) < 2:
        raise ValueError(f"{node}: the schedule has no steps (sigmas {sigmas.tolist()}): raise steps or denoise")
    settings.check(len(sigmas) - 1)
    patcher = guider.model_patcher
    cost = NfeCounter(sampler, patcher.get_model_object("model_sampling"), patcher)
    planned = plan(node, settings, sigmas, cost)
    samples = comfy.sample.fix_empty_latent_channels(patcher, latent["samples"])
    items = samples.shape[0]
    pbar = comfy.utils.ProgressBar(planned * items)
    outs, results, scorers = [], [], []
    for b in range(items):
        seed_b = (int(seed) + b * ITEM_SEED_STRIDE) % 2**64
        noise = seeded_noise(seed_b, samples.shape[1:])
        scorer = Scorer(vae, verifier, prompt)
        search = SearchSampler(sampler=sampler, algorithm=settings.algorithm, config=settings.config(), seed=seed_b,
                               noise=noise, cost=cost, scorer=scorer, batch_size=settings.batch_size,
                               progress=make_progress(pbar, planned * b, scorer, node_id, b, items))
        out = guider.sample(noise(0).unsqueeze(0).to(samples.dtype), samples[b:b + 1], search, sigmas,
                            denoise_mask=item_mask(latent.get("noise_mask"), samples, b), callback=None,
                            disable_pbar=True, seed=seed_b)
        result = search.result
        if items > 1:
            result.notes.append(f"batch item {b} searched with seed {seed_b} (seed + {b} * 2**32)")
        outs.append(out.to(comfy.model_management.intermediate_device()))
        results.append(result)
        scorers.append(scorer)

    best = dict(latent)
    best["samples"] = torch.cat(outs)
    image = torch.stack([s.images[r.best_id] for s, r in zip(scorers, results)])
    top_k = {k: v for k, v in latent.items() if k not in ("samples", "noise_mask", "batch_index")}
    top_k["samples"] = torch.cat([r.topk for r in results])
    noise_note = None
    noise_id = results[0].best_id
    if settings.algorithm == "paths":
        noise_id = root_id(results[0])
        noise_note = ("Search over Paths re-noises mid-way: this NOISE is the winner's root noise "
                      f"(candidate {noise_id}), which alone does not reproduce the best latent")
    noise = SearchNoise(torch.stack([r.best_noise for r in results]).to(samples.dtype),
                        (int(seed) + noise_id) % 2**64, noise_note)
    report = SearchReport(results=results, verifier=verifier.name, members=verifier.members, prompt=prompt,
                          seconds=time.perf_counter() - start, images=[s.images for s in scorers],
                          latents=[s.latents for s in scorers])
    return best, image, top_k, noise, report
