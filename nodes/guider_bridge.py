"""ComfyUI -> SearchProblem: a whole noise search runs inside one `guider.sample(...)` call per latent item.

`SearchSampler` is handed to the guider in place of the user's SAMPLER. The guider prepares the model, the
conditioning and the latent exactly as for a normal run, then calls `SearchSampler.sample`, which integrates
K candidate rows at a time with the user's sampler function (what KSAMPLER.sample does for one row), decodes
and scores them, and returns the winner for the guider's usual `process_latent_out`. With a second expert
(nodes/experts.py), the second model's guider is run inside the first's, so that both are prepared, and every
candidate runs through each model's part of the schedule.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

import comfy.model_management
import comfy.sampler_helpers
import comfy.samplers
import folder_paths

from ..report.store import TensorStore, spill_note
from ..search import run_search
from ..search.types import Candidate, SearchProblem, SearchResult
from .comfy_model import auto_rows, reference_target, renoise_for
from .denoise import Pause, SearchDenoiser, function_name, takes_noise_sampler
from .experts import Expert, Stage, handoff
from .noise import ItemNoise
from .scoring import TAESD, VAE, Scorer

RECORD_RAM = 256 << 20  # host RAM for the model outputs racing replays (the rest in a temporary file)


class SearchSampler(comfy.samplers.Sampler):
    """A Sampler that runs a noise search (see module docstring); the result is left in `self.result`."""

    def __init__(self, *, sampler, algorithm: str, config: dict, noise: ItemNoise, cost: Callable, scorer: Scorer,
                 batch_size: int, progress: Optional[Callable] = None, expert: Optional[Expert] = None,
                 item: Optional[tuple] = None):
        self.user = sampler
        self.algorithm = algorithm
        self.config = dict(config)
        self.noise: ItemNoise = noise
        self.cost = cost
        self.scorer = scorer
        self.batch_size = int(batch_size)
        self.progress = progress
        self.expert = expert
        self.item = item  # (latent, noise mask) of the item, as the second expert's guider is given them
        self.result: Optional[SearchResult] = None
        self.output: Optional[torch.Tensor] = None  # the second expert's guider output (a two-model search)
        self.notes: list = []  # what this adapter knows beyond the search (NFE drift, shared sampler noise)

    def max_denoise(self, model_wrap, sigmas):
        return self.user.max_denoise(model_wrap, sigmas)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        first = Stage(model_wrap, extra_args, sigmas, 0, denoise_mask, self.max_denoise(model_wrap, sigmas))
        if self.expert is None:
            return self._search([first], noise, latent_image)
        latent, mask = self.item
        then = _SecondStage(self, first, noise, latent_image)
        self.output = self.expert.guider.sample(torch.zeros_like(latent), latent, then, self.expert.parts()[1],
                                                denoise_mask=mask, disable_pbar=True, seed=extra_args.get("seed"))
        return latent_image

    def _search(self, stages: list, noise: torch.Tensor, latent_image) -> torch.Tensor:
        run = _Run(self, stages, noise, latent_image)
        self.result = run_search(self.algorithm, self.problem(run, stages, noise), **self.config)
        self.notes = run.notes()
        best = self.result.best.unsqueeze(0).to(noise.device)
        return stages[-1].model_sampling.inverse_noise_scaling(run.sigmas[-1], best)

    def problem(self, run: "_Run", stages: list, noise: torch.Tensor) -> SearchProblem:
        return SearchProblem(
            integrate=run.integrate, score=run.score, sigmas=run.sigmas_cpu, noise=self.noise,
            renoise=renoise_for(run.model_sampling), cost=self.cost,
            max_batch=self.batch_size or min(auto_rows(s.model_wrap, noise.shape) for s in stages),
            progress=self.progress, device=noise.device,
            aggregate=getattr(self.scorer.handle.verifier, "aggregate", None))


class _SecondStage(comfy.samplers.Sampler):
    """What the second expert's guider samples with: it hands its prepared model back, and the search runs over
    both stages inside this call (so both guiders keep their models prepared throughout)."""

    def __init__(self, owner: SearchSampler, first: Stage, noise: torch.Tensor, latent_image):
        self.owner, self.first, self.noise, self.latent_image = owner, first, noise, latent_image

    def max_denoise(self, model_wrap, sigmas):
        return self.owner.max_denoise(model_wrap, sigmas)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        second = Stage(model_wrap, extra_args, sigmas, self.first.end, denoise_mask,
                       self.max_denoise(model_wrap, sigmas))
        return self.owner._search([self.first, second], self.noise, self.latent_image)


class _Run:
    """State of one search inside SearchSampler.sample: the prepared stages (one per model), the latent and mask."""

    def __init__(self, owner: SearchSampler, stages: list, noise, latent_image):
        self.bind(owner, stages, noise, latent_image)
        self.fn = owner.user.sampler_function
        self.root_noise: dict = {}  # root candidate id -> its initial noise row (kept only for inpainting masks)
        self.handed: dict = {}  # candidate id -> its latent_image after the switch (kept only for inpainting masks)
        verifier = owner.scorer.handle.verifier
        self.needs_reference = "reference" in verifier.needs
        self.reference_sigma = (reference_target(self.model_sampling, verifier.reference_sigma)
                                if self.needs_reference else None)
        self.references: dict = {}  # candidate id -> (|sigma - target|, x0 row on the CPU)
        self.paused: dict = {}  # plain candidate id -> (initial noise, state, model calls so far), CPU rows
        self.rerun: set = set()  # plain candidates whose paused run was lost with a worker, run again from noise
        self.recorded = TensorStore(RECORD_RAM, folder_paths.get_temp_directory())  # id -> its model outputs
        self.early_notes: list = []
        self.mismatch: set = set()
        module = getattr(self.fn, "__module__", "") or ""
        if not takes_noise_sampler(self.fn) and not module.startswith("comfy."):
            self.early_notes.append(f"sampler {function_name(self.fn)} takes no noise_sampler: if it draws random "
                                    f"noise, rows share it and results depend on batch_size")

    def bind(self, owner: SearchSampler, stages: list, noise, latent_image) -> None:
        """What one guider.sample call prepared: the stages, the latent; a worker binds its run to every call's."""
        self.owner = owner
        self.stages: list[Stage] = stages
        self.sigmas = torch.cat([stages[0].sigmas] + [s.sigmas[1:] for s in stages[1:]])
        self.sigmas_cpu = self.sigmas.detach().to("cpu", torch.float32, copy=True)  # samplers may write into theirs
        self.device, self.dtype = noise.device, noise.dtype
        self.latent_image = latent_image
        self.model_sampling = stages[0].model_sampling
        self.last = stages[-1].model_wrap.inner_model  # whose process_latent_out gives the output latent
        self.shape = tuple(noise.shape[1:])
        self.current: Optional[Stage] = stages[-1]  # the stage whose models were loaded last (None after scoring)

    @property
    def portable(self) -> bool:
        """Whether a candidate needs nothing its parent left in this run (x0 references, a masked latent handed
        to a later model), so a child may run elsewhere than its parent."""
        return not self.needs_reference and all(s.denoise_mask is None for s in self.stages[1:])

    def load(self, stage: Stage, rows: int) -> None:
        """Before a stage runs after scoring or after the other stage: load exactly the models its sampling
        loaded, with the memory `rows` candidate rows need."""
        if stage is self.current:
            return
        patcher = stage.model_wrap.model_patcher
        required, minimum = comfy.sampler_helpers.estimate_memory(patcher, (rows,) + self.shape, stage.model_wrap.conds)
        comfy.model_management.load_models_gpu(stage.loaded, memory_required=required,
                                               minimum_memory_required=minimum)
        self.current = stage

    @staticmethod
    def rows(t: Optional[torch.Tensor], k: int) -> Optional[torch.Tensor]:
        """The item's batch-1 latent or mask repeated for k candidate rows."""
        if t is None:
            return None
        return t.expand(k, *t.shape[1:]).contiguous()

    def integrate(self, x: torch.Tensor, sigmas: torch.Tensor, batch: Sequence[Candidate]):
        kinds = {(c.from_noise, c.plain) for c in batch}
        if len(kinds) != 1:
            raise RuntimeError("internal: a chunk mixes initial noises, partial trajectories and plain runs")
        fresh, plain = kinds.pop()
        if plain and len(sigmas) != len(self.sigmas_cpu):
            return self._continue(x, sigmas, batch)
        start = _offset(self.sigmas_cpu, sigmas)
        end = start + len(sigmas) - 1
        x = x.to(self.device, self.dtype)
        if fresh and start != 0:
            raise RuntimeError("internal: fresh noises must start at the start of the schedule")
        if not fresh:
            for c in batch:
                for kept in (self.references, self.handed):
                    if c.parent in kept:
                        kept.setdefault(c.id, kept[c.parent])
        x0, calls = None, 0
        for stage in self._stages(start, end):
            lo, hi = max(start, stage.start), min(end, stage.end)
            sig = self.sigmas[lo: hi + 1].clone()  # uni_pc writes into the sigmas it is given
            x, model_k = self._run_stage(stage, x, sig, batch, fresh and lo == 0, lo == stage.start)
            calls += model_k.live_calls
            x0 = model_k.x0
        self._count(calls, self.owner.cost(sigmas), sigmas, x0)
        return x, x0

    def _stages(self, start: int, end: int) -> list:
        return [s for s in self.stages if s.start < end and s.end > start]

    def _run_stage(self, stage: Stage, x: torch.Tensor, sig: torch.Tensor, batch: Sequence[Candidate],
                   fresh: bool, entering: bool, **denoiser):
        """The user's sampler over `sig` (a part of `stage`) from state `x`, or from initial noise (`fresh`);
        `entering` at a later stage's first sigma, the state is first handed over as the stock chain does."""
        self.load(stage, len(batch))
        if fresh:
            x = self._start(x, sig, batch, stage)
        latent, inpaint = self.rows(self.latent_image, len(batch)), self._inpaint_noise(batch, x)
        if stage.start > 0:
            if entering:
                before = self.stages[self.stages.index(stage) - 1]
                x, handed = handoff(before, stage, x)
                if stage.denoise_mask is not None:
                    self.handed.update({c.id: row.detach().to("cpu") for c, row in zip(batch, handed)})
            if stage.denoise_mask is not None:
                latent = torch.stack([self.handed[c.id] for c in batch]).to(x)
                inpaint = (self.owner.noise.inpaint_noise([c.id for c in batch], x) if self._random_inpaint()
                           else torch.zeros_like(x))  # the second KSamplerAdvanced adds no noise
        model_k = SearchDenoiser(stage.model_wrap, stage.sigmas, latent, inpaint,
                                 on_eval=self._capture(batch) if self.needs_reference else None, **denoiser)
        try:
            x = self._sample(stage, model_k, x, sig, batch)
        except Pause as pause:
            x = pause.x
        return x, model_k

    def _start(self, noise: torch.Tensor, sig: torch.Tensor, batch: Sequence[Candidate], stage: Stage) -> torch.Tensor:
        """Initial noise rows -> the sampler's starting state, as KSAMPLER.sample scales them."""
        if stage.denoise_mask is not None:
            self.root_noise.update({c.root: row for c, row in zip(batch, noise)})
        return self.model_sampling.noise_scaling(sig[0], noise, self.rows(self.latent_image, len(batch)),
                                                 stage.max_denoise)

    def _sample(self, stage: Stage, model_k: SearchDenoiser, x: torch.Tensor, sig: torch.Tensor,
                batch: Sequence[Candidate]) -> torch.Tensor:
        """The user's sampler function over `sig` from state `x`, with the stage's conds, mask and per-row noise."""
        extra_args = dict(stage.extra_args)
        extra_args["denoise_mask"] = self.rows(stage.denoise_mask, len(batch))
        kwargs = dict(self.owner.user.extra_options)
        if takes_noise_sampler(self.fn) and kwargs.get("noise_sampler") is None:
            kwargs["noise_sampler"] = self.owner.noise.noise_sampler(self.fn, x, sig, [c.id for c in batch])
        return self.fn(model_k, x, sig, extra_args=extra_args, callback=None, disable=True, **kwargs)

    def _count(self, calls: int, expected: int, sigmas: torch.Tensor, x0: Optional[torch.Tensor]) -> None:
        if calls != expected:
            self.mismatch.add((calls, expected))
        if x0 is None:
            raise RuntimeError(f"the sampler made no model call over sigmas {sigmas.tolist()}")

    def _continue(self, x: torch.Tensor, sigmas: torch.Tensor, batch: Sequence[Candidate]):
        """Plain candidates over a slice of the schedule (racing): one uninterrupted stock run (per stage), paused
        at the slice's end. The sampler runs from each seed's noise over each stage's whole schedule again,
        replaying the recorded model outputs up to the slice's start (no model call) and pausing at the call that
        begins its end, so multistep history and ancestral noise carry on exactly as in a stock run."""
        full = self.sigmas_cpu
        start = _offset(full, sigmas)
        end = start + len(sigmas) - 1
        cost = self.owner.cost
        done = cost(full[: start + 1]) if start > 0 else 0
        stop_at = cost(full[: end + 1]) if end < len(full) - 1 else None
        paused = [self.paused.pop(c.id, None) for c in batch] if start > 0 else []
        if start > 0 and all(p is None for p in paused):  # paused elsewhere, by a worker since lost: run again
            self.rerun.update(c.id for c in batch)
            done, start = 0, 0
            x = torch.stack([self.owner.noise(c.id) for c in batch])
        if start == 0:
            noise = x.detach().to("cpu")
            replay: list = []
        else:
            if any(p is None or p[2] != done or not torch.equal(p[1], row.detach().to("cpu"))
                   for p, row in zip(paused, x)):
                raise RuntimeError(f"internal: candidates {[c.id for c in batch]} continue no run paused at step "
                                   f"{start}")
            for i in [i for i, p in self.paused.items() if p[2] < done]:  # dropped at earlier rungs
                del self.paused[i]
                self.recorded.discard(i)
            noise = torch.stack([p[0] for p in paused])
            replay = list(torch.stack([self.recorded[c.id] for c in batch]).unbind(1))
        x, x0, live, before, recorded = noise.to(self.device, self.dtype), None, 0, 0, []
        for stage in self._stages(0, end):
            calls = cost(full[stage.start: stage.end + 1])
            stop = stop_at - before if stop_at is not None and stop_at < before + calls else None
            x, model_k = self._run_stage(stage, x, stage.sigmas.clone(), batch, stage.start == 0, True,
                                         replay=replay[before: before + calls], stop_at=stop,
                                         record=stop_at is not None)
            live, before, x0 = live + model_k.live_calls, before + calls, model_k.x0
            recorded += model_k.recorded
        self._count(live, (stop_at if stop_at is not None else cost(full)) - done, sigmas, x0)
        if stop_at is not None:
            outputs = torch.stack(replay + recorded, dim=1)  # [K, calls, *shape]
            for i, c in enumerate(batch):
                self.recorded.add(c.id, outputs[i])
                self.paused[c.id] = (noise[i], x[i].detach().to("cpu"), stop_at)
        else:
            for c in batch:
                self.recorded.discard(c.id)
        return x, x0

    def _random_inpaint(self) -> bool:
        return getattr(self.owner.user, "inpaint_options", {}).get("random", False)

    def _inpaint_noise(self, batch: Sequence[Candidate], x: torch.Tensor) -> Optional[torch.Tensor]:
        """What KSAMPLER gives KSamplerX0Inpaint as `noise` (used with a mask only): the initial noise, or a fresh
        one for samplers with inpaint_options random (ddim)."""
        if self.stages[0].denoise_mask is None:
            return None
        if self._random_inpaint():
            return self.owner.noise.inpaint_noise([c.id for c in batch], x)
        return torch.stack([self.root_noise[c.root] if c.root in self.root_noise else self.owner.noise(c.root)
                            for c in batch]).to(x)

    def _capture(self, batch: Sequence[Candidate]) -> Callable:
        """Keep, per candidate, the x0 prediction made closest to the verifier's reference sigma."""
        def on_eval(sigma, x0):
            distance = abs(float(sigma.flatten()[0]) - self.reference_sigma)
            for c, row in zip(batch, x0):
                if c.id not in self.references or distance <= self.references[c.id][0]:
                    self.references[c.id] = (distance, row.detach().to("cpu"))
        return on_eval

    def model_latent(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        """Final states or x0 predictions -> the model's latent space (what TAESD previews decode)."""
        x = x.to(self.device)
        if final:
            x = self.stages[-1].model_sampling.inverse_noise_scaling(self.sigmas[-1], x)
        return x.to(torch.float32)

    def decode(self, model_x: torch.Tensor, ids: list, how: str) -> torch.Tensor:
        scorer = self.owner.scorer
        if how == TAESD:
            return scorer.decode_preview(model_x, ids)
        return scorer.decode(self.last.process_latent_out(model_x), ids)

    def score(self, x: torch.Tensor, sigma: float, batch: Sequence[Candidate]):
        scorer = self.owner.scorer
        final = batch[0].final
        how = scorer.decoder_for(final)
        ids = [c.id for c in batch]
        model_x = self.model_latent(x, final)
        images = self.decode(model_x, ids, how)
        references = None
        if self.needs_reference:
            refs = torch.stack([self.references[c.id][1] for c in batch]).to(self.device, torch.float32)
            references = self.decode(refs, ids, scorer.decoder_for(final=False))
        self.current = None  # decoding and scoring may have unloaded the model
        out = scorer.score(images, references, batch)
        for c in batch:
            c.decode = how
        if final:
            latents = self.last.process_latent_out(model_x)
            scorer.keep_final(batch, latents, images, out[0] if isinstance(out, tuple) else out, full=how == VAE)
        return out

    def notes(self) -> list[str]:
        """What this run learnt that the search cannot know: model calls that differ from the dry run."""
        drift = [f"NFE count drifted: the sampler made {calls} model calls where its dry run counted {expected}"
                 for calls, expected in sorted(self.mismatch)]
        spilled = spill_note("recorded model outputs of paused runs", [self.recorded], RECORD_RAM)
        self.recorded.close()
        rerun = ([f"candidates {sorted(self.rerun)} ran again from their noise up to where they had been paused, "
                  f"on another worker (the one that held them was lost): same result, more NFEs than counted"]
                 if self.rerun else [])
        return self.early_notes + drift + ([spilled] if spilled else []) + rerun


def _offset(full: torch.Tensor, part: torch.Tensor) -> int:
    """Where the slice `part` starts in the schedule `full`."""
    for i in range(len(full) - len(part) + 1):
        if torch.equal(full[i: i + len(part)], part):
            return i
    raise RuntimeError(f"internal: sigmas {part.tolist()} are no slice of the schedule {full.tolist()}")
