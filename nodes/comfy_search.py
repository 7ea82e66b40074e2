"""ComfyUI -> SearchProblem: a whole noise search runs inside one `guider.sample(...)` call per latent item.

`SearchSampler` is handed to the guider in place of the user's SAMPLER. The guider prepares the model, the
conditioning and the latent exactly as for a normal run, then calls `SearchSampler.sample`, which integrates
K candidate rows at a time with the user's sampler function (what KSAMPLER.sample does for one row), decodes
and scores them, and returns the winner for the guider's usual `process_latent_out`.
"""

from __future__ import annotations

import inspect
import logging
import sys
import time
from typing import Callable, Optional, Sequence

import torch

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.sampler_helpers
import comfy.samplers
import comfy.utils

from ..search import BudgetError, estimate_nfe, run_search
from ..search.noise import RENOISE
from ..search.report import SearchReport
from ..search.types import Candidate, SearchProblem, SearchResult
from ..verifiers.base import VerifierError
from .denoise import ADAPTIVE, NfeCounter, SearchDenoiser, function_name, takes_noise_sampler
from .noise import ItemNoise, candidate_seed
from .types import LoadedVerifier, SearchNoise

log = logging.getLogger(__name__)
FRESH_KINDS = ("initial", "neighbour")  # candidates whose rows are raw initial noises at the schedule start
CPU_ROWS = 4  # auto batch size on the CPU


def noising_kernel(model_sampling) -> str:
    """Search over Paths' forward kernel: rectified flow for CONST models (SD3, Flux), VE otherwise."""
    return "flow" if isinstance(model_sampling, comfy.model_sampling.CONST) else "ve"


def renoise_for(model_sampling) -> Callable:
    """The exact forward kernel of this model; flow noise is scaled by the model's `noise_scale` where it has one,
    as its own noise_scaling does (newer ComfyUI)."""
    kernel = RENOISE[noising_kernel(model_sampling)]
    scale = float(getattr(model_sampling, "noise_scale", 1.0))
    if kernel is RENOISE["ve"] or scale == 1.0:
        return kernel
    return lambda x, s_from, s_to, noise: kernel(x, s_from, s_to, scale * noise)


def noise_ignored(model_sampling, sigma: torch.Tensor, shape: Sequence[int]) -> bool:
    """Whether the model's noise_scaling discards the noise (image-to-image flow types): every candidate would
    be the same image. Probed by behaviour, so custom model samplings are covered too."""
    latent = torch.zeros((1,) + tuple(shape), dtype=torch.float32)
    ones = model_sampling.noise_scaling(sigma, torch.ones_like(latent), latent.clone())
    twos = model_sampling.noise_scaling(sigma, torch.full_like(latent, 2.0), latent.clone())
    return torch.equal(ones, twos)


def reference_target(model_sampling, reference_sigma: float) -> float:
    """The model sigma whose signal-to-noise ratio equals flow time `reference_sigma` (t/(1-t) for VE models)."""
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        return float(reference_sigma)
    return float(reference_sigma) / max(1e-6, 1.0 - float(reference_sigma))


def free_memory(model_wrap, device) -> int:
    """Free memory on `device` as the model sees it: newer ComfyUI's patcher counts evictable dynamic-VRAM weights."""
    patcher = getattr(model_wrap.inner_model, "current_patcher", None) or model_wrap.model_patcher
    own = getattr(patcher, "get_free_memory", None)
    return int(own(device)) if callable(own) else int(comfy.model_management.get_free_memory(device))


def auto_rows(model_wrap, shape: Sequence[int]) -> int:
    """Rows per model call that fit in free memory (a CFG pair per row), or CPU_ROWS on the CPU."""
    device = model_wrap.model_patcher.load_device
    if comfy.model_management.is_device_cpu(device):
        return CPU_ROWS
    per_row = model_wrap.inner_model.memory_required([2] + list(shape[1:]))
    return int(max(1, min(64, (free_memory(model_wrap, device) * 0.8) // max(per_row, 1))))


class Scorer:
    """Decodes latents with the VAE and scores them; keeps every final candidate's image and latent."""

    def __init__(self, node: str, vae, handle: LoadedVerifier, prompt: Optional[str]):
        self.node = node
        self.vae = vae
        self.handle = handle
        self.prompt = prompt
        self.images: dict = {}
        self.latents: dict = {}

    def decode(self, latents: torch.Tensor, batch: Sequence[Candidate]) -> torch.Tensor:
        """Decode candidate latents; NaN is blamed on whichever of the model and the VAE produced it."""
        bad = [c.id for c, row in zip(batch, latents) if not torch.isfinite(row).all()]
        if bad:
            raise ValueError(f"{self.node}: the model produced NaN or infinite latents for candidate(s) {bad}: the "
                             f"diffusion model overflows in its dtype; try a different model dtype (e.g. ComfyUI's "
                             f"--force-fp32 or --bf16-unet) or a lower cfg")
        images = self.vae.decode(latents)
        if images.ndim == 5:
            if images.shape[1] != 1:
                raise ValueError(f"{self.node}: the VAE decoded {images.shape[1]} frames per candidate: Noise Search "
                                 f"scores single images, not videos")
            images = images[:, 0]
        images = images.to("cpu", torch.float32)
        bad = [c.id for c, image in zip(batch, images) if torch.isnan(image).any()]
        if bad:
            raise ValueError(f"{self.node}: the VAE decoded NaN pixels for candidate(s) {bad} from finite latents: "
                             f"the VAE overflows in half precision; start ComfyUI with --fp32-vae (or --cpu-vae), "
                             f"or use a VAE fixed for fp16")
        return images

    def score(self, images: torch.Tensor, references: Optional[torch.Tensor]):
        self.handle.load()
        verifier = self.handle.verifier
        scores = verifier.score(images, self.prompt, references)
        members = verifier.member_scores()
        return (scores, members) if members else scores


class SearchSampler(comfy.samplers.Sampler):
    """A Sampler that runs a noise search (see module docstring); the result is left in `self.result`."""

    def __init__(self, *, sampler, algorithm: str, config: dict, noise: ItemNoise, cost: Callable, scorer: Scorer,
                 batch_size: int, progress: Optional[Callable] = None):
        self.user = sampler
        self.algorithm = algorithm
        self.config = dict(config)
        self.noise: ItemNoise = noise
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
            renoise=renoise_for(run.model_sampling), cost=self.cost,
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
        self.sigmas_cpu = sigmas.detach().to("cpu", torch.float32, copy=True)  # samplers may write into theirs
        self.sigma_end = float(self.sigmas_cpu[-1])
        self.extra_args = extra_args
        self.device, self.dtype = noise.device, noise.dtype
        self.latent_image = latent_image
        self.denoise_mask = denoise_mask
        self.model_sampling = model_wrap.inner_model.model_sampling
        self.max_denoise = owner.max_denoise(model_wrap, sigmas)
        self.fn = owner.user.sampler_function
        self.shape = tuple(noise.shape[1:])
        self.loaded = [model_wrap.model_patcher] + list(getattr(model_wrap, "loaded_models", []))  # as prepare_sampling
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

    def reload(self, rows: int) -> None:
        """After scoring, load exactly the models sampling loaded, with the memory `rows` candidate rows need."""
        patcher = self.model_wrap.model_patcher
        required, minimum = comfy.sampler_helpers.estimate_memory(patcher, (rows,) + self.shape, self.model_wrap.conds)
        comfy.model_management.load_models_gpu(self.loaded, memory_required=required,
                                               minimum_memory_required=minimum)

    @staticmethod
    def rows(t: Optional[torch.Tensor], k: int) -> Optional[torch.Tensor]:
        """The item's batch-1 latent or mask repeated for k candidate rows."""
        if t is None:
            return None
        return t.expand(k, *t.shape[1:]).contiguous()

    def integrate(self, x: torch.Tensor, sigmas: torch.Tensor, batch: Sequence[Candidate]):
        k = len(batch)
        if self.scored:
            self.reload(k)
            self.scored = False
        fresh = {c.kind in FRESH_KINDS for c in batch}
        if len(fresh) != 1:
            raise RuntimeError("internal: a chunk mixes fresh noises and partial trajectories")
        fresh = fresh.pop()
        x = x.to(self.device, self.dtype)
        sig = sigmas.to(self.device, copy=True)  # uni_pc writes into the sigmas it is given
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
        ids = [c.id for c in batch]
        model_k = SearchDenoiser(self.model_wrap, self.sigmas, latent, self._inpaint_noise(batch, x),
                                 on_eval=self._capture(batch) if self.needs_reference else None)
        extra_args = dict(self.extra_args)
        extra_args["denoise_mask"] = self.rows(self.denoise_mask, k)
        kwargs = dict(self.owner.user.extra_options)
        if takes_noise_sampler(self.fn) and kwargs.get("noise_sampler") is None:
            kwargs["noise_sampler"] = self.owner.noise.noise_sampler(self.fn, x, sig, ids)
        x_end = self.fn(model_k, x, sig, extra_args=extra_args, callback=None, disable=True, **kwargs)
        expected = self.owner.cost(sigmas)
        if model_k.calls != expected:
            self.mismatch.add((model_k.calls, expected))
        if model_k.x0 is None:
            raise RuntimeError(f"the sampler made no model call over sigmas {sigmas.tolist()}")
        return x_end, model_k.x0

    def _inpaint_noise(self, batch: Sequence[Candidate], x: torch.Tensor) -> Optional[torch.Tensor]:
        """What KSAMPLER gives KSamplerX0Inpaint as `noise` (used with a mask only): the initial noise, or a fresh
        one for samplers with inpaint_options random (ddim)."""
        if self.denoise_mask is None:
            return None
        if getattr(self.owner.user, "inpaint_options", {}).get("random", False):
            return self.owner.noise.inpaint_noise([c.id for c in batch], x)
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
        images = scorer.decode(latents, batch)
        references = None
        if self.needs_reference:
            refs = torch.stack([self.references[c.id][1] for c in batch])
            references = scorer.decode(self.model_wrap.inner_model.process_latent_out(refs.to(self.device)), batch)
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


def announce(report: SearchReport, node_id: Optional[str]) -> None:
    """Every note of a finished search goes to the server log and, with the winner, to the node's status text."""
    notes = report.all_notes()
    for note in notes:
        log.info("Noise Search: %s", note)
    winners = "; ".join(f"best {r.best_score:.4f} (candidate {r.best_id}), {r.nfe}/{r.nfe_planned} NFE"
                        for r in report.results)
    _send_text("\n".join([f"Noise Search done: {winners}"] + [f"note: {n}" for n in notes]), node_id)


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


RATIO_KEYS = ("downscale_ratio_spacial", "downscale_ratio_temporal")  # newer ComfyUI's empty-latent size hints


def fix_empty_latent(patcher, latent: dict) -> torch.Tensor:
    """The latent samples exactly as the stock KSampler fixes them; newer ComfyUI also takes the latent's
    downscale ratios (feature-detected, so 0.3.64 keeps working)."""
    fix = comfy.sample.fix_empty_latent_channels
    params = inspect.signature(fix).parameters
    return fix(patcher, latent["samples"], **{k: latent.get(k) for k in RATIO_KEYS if k in params})


def stock_latent_out(latent: dict, samples: torch.Tensor) -> dict:
    """A LATENT output built from the input latent as the stock samplers build theirs (size hints dropped)."""
    out = {k: v for k, v in latent.items() if k not in RATIO_KEYS}
    out["samples"] = samples
    return out


def check_latent(node: str, latent: dict, patcher, vae) -> torch.Tensor:
    """The latent batch as the stock samplers fix it, refused up front where the search cannot run on it."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.is_nested:
        raise ValueError(f"{node}: latent_image is not a single image latent ({type(samples).__name__}): nested "
                         f"(audio + video) latents cannot be searched; connect an image latent")
    if samples.shape[0] == 0:
        raise ValueError(f"{node}: latent_image has 0 items: connect a latent with at least one image "
                         f"(e.g. Empty Latent Image with batch_size 1)")
    samples = fix_empty_latent(patcher, latent)
    if samples.ndim == 5 and samples.shape[2] != 1:
        raise ValueError(f"{node}: latent_image is a video latent with {samples.shape[2]} frames "
                         f"{tuple(samples.shape)}: Noise Search scores single images; use an image model and latent")
    if samples.ndim not in (4, 5):
        raise ValueError(f"{node}: latent_image has shape {tuple(samples.shape)}; Noise Search needs an image latent "
                         f"[batch, channels, height, width]")
    model_channels = patcher.get_model_object("latent_format").latent_channels
    vae_channels = getattr(vae, "latent_channels", None)
    if vae_channels is not None and vae_channels != model_channels:
        raise ValueError(f"{node}: the vae input decodes {vae_channels}-channel latents but the model makes "
                         f"{model_channels}-channel ones: connect the VAE that belongs to the model (e.g. the "
                         f"checkpoint's own VAE output)")
    return samples


def run_node_search(*, node: str, node_id: Optional[str], guider, sampler, sampler_input: str, sigmas, latent: dict,
                    seed: int, vae, verifier, prompt: Optional[str], settings) -> tuple:
    """Search every latent batch item; return (latent, image, top_k, noise, report) as the nodes output them."""
    start = time.perf_counter()
    check_verifier(node, verifier, prompt)
    check_sampler(node, sampler, sampler_input)
    sigmas = sigmas.detach().to("cpu", torch.float32, copy=True).flatten()
    if len(sigmas) < 2:
        raise ValueError(f"{node}: the schedule has no steps (sigmas {sigmas.tolist()}): raise steps or denoise")
    settings.check(len(sigmas) - 1)
    patcher = guider.model_patcher
    samples = check_latent(node, latent, patcher, vae)
    model_sampling = patcher.get_model_object("model_sampling")
    if noise_ignored(model_sampling, sigmas[0], samples.shape[1:]):
        raise ValueError(f"{node}: this model's sampling ({type(model_sampling).__name__}) ignores the initial noise, so "
                         f"every candidate would be the same image and there is nothing to search: use a plain "
                         f"sampler for this model")
    cost = NfeCounter(sampler, model_sampling, patcher)
    planned = plan(node, settings, sigmas, cost)
    items = samples.shape[0]
    notes = settings.notes()
    pbar = comfy.utils.ProgressBar(planned * items)
    outs, results, scorers = [], [], []
    for b in range(items):
        noise = ItemNoise(samples, b, seed, latent.get("batch_index"))
        scorer = Scorer(node, vae, verifier, prompt)
        search = SearchSampler(sampler=sampler, algorithm=settings.algorithm, config=settings.config(),
                               noise=noise, cost=cost, scorer=scorer, batch_size=settings.batch_size,
                               progress=make_progress(pbar, planned * b, scorer, node_id, b, items))
        out = guider.sample(noise(0).unsqueeze(0).to(samples.dtype), samples[b:b + 1], search, sigmas,
                            denoise_mask=item_mask(latent.get("noise_mask"), samples, b), callback=None,
                            disable_pbar=True, seed=seed)
        result = search.result
        outs.append(out.to(comfy.model_management.intermediate_device()))
        results.append(result)
        scorers.append(scorer)

    best = stock_latent_out(latent, torch.cat(outs))
    image = torch.stack([s.images[r.best_id] for s, r in zip(scorers, results)])
    top_k = stock_latent_out({k: v for k, v in latent.items() if k not in ("noise_mask", "batch_index")},
                             torch.cat([r.topk for r in results]))
    noise = winning_noise(settings.algorithm, results, seed, samples.dtype, takes_noise_sampler(sampler.sampler_function))
    report = SearchReport(results=results, verifier=verifier.name, members=verifier.members, prompt=prompt,
                          seconds=time.perf_counter() - start, images=[s.images for s in scorers],
                          latents=[s.latents for s in scorers], notes=notes + ([noise.note] if noise.note else []))
    announce(report, node_id)
    return best, image, top_k, noise, report


def winning_noise(algorithm: str, results: Sequence[SearchResult], seed: int, dtype: torch.dtype,
                  ancestral: bool) -> SearchNoise:
    """The NOISE output: every item's winning initial noise, seeded for item 0's winner, with what it cannot replay."""
    ids = [root_id(r) if algorithm == "paths" else r.best_id for r in results]
    if algorithm == "paths":
        note = (f"Search over Paths re-noises mid-way: the noise output is the winner's root noise (candidate "
                f"{ids[0]}), which alone does not reproduce the best latent")
    elif ancestral and len(set(ids)) > 1:
        note = (f"the batch items' winners are candidates {ids}: the noise output replays them exactly only with an "
                f"ODE sampler, because one seed ({candidate_seed(seed, ids[0])}) drives the sampler's own noise for "
                f"every item")
    else:
        note = None
    return SearchNoise(torch.stack([r.best_noise for r in results]).to(dtype), candidate_seed(seed, ids[0]), note)
