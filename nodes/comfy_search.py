"""A Noise Search node's run: check everything, search every latent batch item, build the outputs and the report."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

import comfy.model_management
import comfy.utils
import folder_paths

from ..report import SearchReport
from ..report.report import image_batch
from ..report.store import TensorStore, spill_note
from ..search.noise import candidate_seed
from ..search.types import SearchResult
from .checks import check_latent, check_model, check_sampler, check_verifier, check_video_verifier
from .comfy_model import item_mask, stock_latent_out
from .denoise import NfeCounter, takes_noise_sampler
from .experts import Expert
from .guider_bridge import SearchSampler
from .noise import ItemNoise
from .preview_decode import FULL, PreviewDecoder, find_preview_decoder
from .progress import announce, make_progress
from .scoring import LATENT_RAM, THUMB_RAM, Scorer
from .types import SearchNoise


@dataclass
class Prepared:
    """A search node's inputs, checked, and what is decided from them once before any sampling: the master and
    every worker build it from the same inputs (nodes/workers)."""

    node: str
    guider: object
    sampler: object
    sigmas: torch.Tensor  # the whole schedule (CPU)
    latent: dict
    samples: torch.Tensor  # the latent batch as the stock samplers fix it
    seed: int
    vae: object
    verifier: object
    prompt: Optional[str]
    settings: object
    expert: Optional[Expert]
    cost: NfeCounter
    planned: int  # NFEs per item
    preview: Optional[PreviewDecoder]
    notes: list = field(default_factory=list)

    @property
    def items(self) -> int:
        return int(self.samples.shape[0])

    @property
    def last_model(self):
        """The model whose guider gives the output latent (the second expert's where there is one)."""
        return (self.expert.guider if self.expert is not None else self.guider).model_patcher

    def noise(self, b: int) -> ItemNoise:
        return ItemNoise(self.samples, b, self.seed, self.latent.get("batch_index"))

    def scorer(self, b: int, keep: int, spill_dir: Optional[str] = None) -> Scorer:
        stores = {} if spill_dir is None else {
            "latents": TensorStore(LATENT_RAM // self.items, spill_dir),
            "thumbs": TensorStore(THUMB_RAM // self.items, spill_dir)}
        return Scorer(self.node, self.vae, self.verifier, self.prompt, keep=keep, preview=self.preview,
                      preview_mode=self.settings.scoring_decode, **stores)

    def search_sampler(self, b: int, scorer: Scorer, progress=None, cls=SearchSampler, **extra) -> SearchSampler:
        return cls(sampler=self.sampler, algorithm=self.settings.algorithm, config=self.settings.config(),
                   noise=self.noise(b), cost=self.cost, scorer=scorer, batch_size=self.settings.batch_size,
                   progress=progress, expert=self.expert, item=(self.samples[b:b + 1], self.mask(b)), **extra)

    def mask(self, b: int) -> Optional[torch.Tensor]:
        return item_mask(self.latent.get("noise_mask"), self.samples, b)

    def sample(self, b: int, search: SearchSampler) -> torch.Tensor:
        """Item `b` through the guider(s), `search` in place of the sampler: the guider's output latent."""
        first = self.expert.parts()[0] if self.expert is not None else self.sigmas
        out = self.guider.sample(self.noise(b)(0).unsqueeze(0).to(self.samples.dtype), self.samples[b:b + 1],
                                 search, first, denoise_mask=self.mask(b), callback=None, disable_pbar=True,
                                 seed=self.seed)
        return search.output if self.expert is not None else out


def prepare(*, node: str, guider, sampler, sampler_input: str, sigmas, latent: dict, seed: int, vae, verifier,
            prompt: Optional[str], settings, expert: Optional[Expert] = None) -> Prepared:
    """Check every input before sampling; plan the search's NFEs and find its preview decoder."""
    check_verifier(node, verifier, prompt)
    check_sampler(node, sampler, sampler_input)
    sigmas = sigmas.detach().to("cpu", torch.float32, copy=True).flatten()
    if len(sigmas) < 2:
        raise ValueError(f"{node}: the schedule has no steps (sigmas {sigmas.tolist()}): raise steps or denoise")
    patcher = guider.model_patcher
    samples = check_latent(node, latent, patcher, vae)
    model_sampling = patcher.get_model_object("model_sampling")
    check_model(node, model_sampling, sigmas, samples)
    check_video_verifier(node, verifier, samples)
    if expert is not None:
        check_model(node, expert.guider.model_patcher.get_model_object("model_sampling"), sigmas, samples)
    switch = float(sigmas[expert.switch]) if expert is not None else None
    cost = NfeCounter(sampler, model_sampling, patcher, switch)
    planned = settings.plan(sigmas, cost, getattr(verifier.verifier, "aggregate", None))
    notes = settings.notes()
    if expert is not None:
        notes.append(f"two experts: model runs steps 0-{expert.switch}, model_2 steps {expert.switch}-"
                     f"{len(sigmas) - 1} (switch at sigma {switch:.4g}), as two chained KSamplerAdvanced nodes")
    preview = preview_decoder(node, settings.scoring_decode, patcher)
    if preview is not None:
        notes.append(f"scoring decode: {settings.scoring_decode} ({preview.name}); every output image is decoded "
                     f"by the VAE")
    return Prepared(node, guider, sampler, sigmas, latent, samples, seed, vae, verifier, prompt, settings, expert,
                    cost, planned, preview, notes)


def run_node_search(*, node_id: Optional[str], workers=None, **inputs) -> tuple:
    """Search every latent batch item (through both models where a second `expert` takes over at its switch step;
    spread over `workers` where given); return (latent, image, top_k, noise, report, seed) as the nodes output
    them. `inputs` are prepare()'s."""
    start = time.perf_counter()
    p = prepare(**inputs)
    items, settings, latent, seed = p.items, p.settings, p.latent, p.seed
    notes = list(p.notes)
    pbar = comfy.utils.ProgressBar(p.planned * items)
    outs, results, scorers = [], [], []
    spill_dir = folder_paths.get_temp_directory()
    os.makedirs(spill_dir, exist_ok=True)
    session = workers.session(p) if workers is not None else None
    try:
        for b in range(items):
            scorer = p.scorer(b, settings.top_k, spill_dir)
            progress = make_progress(pbar, p.planned * b, scorer, node_id, b, items)
            if session is None:
                search = p.search_sampler(b, scorer, progress)
                out = p.sample(b, search)
                result, item_notes = search.result, search.notes
            else:
                result, out, item_notes = session.search_item(b, scorer, progress)
            outs.append(out.to(comfy.model_management.intermediate_device()))
            scorer.finish(result)
            results.append(result)
            scorers.append(scorer)
            notes += [f"item {b}: {n}" if items > 1 else n for n in item_notes]
    finally:
        if session is not None:
            notes += session.close()

    best = stock_latent_out(latent, torch.cat(outs))
    image = image_batch(s.images[r.best_id] for s, r in zip(scorers, results))
    top_k = stock_latent_out({k: v for k, v in latent.items() if k not in ("noise_mask", "batch_index")},
                             torch.stack([s.latents[i] for s, r in zip(scorers, results) for i in r.topk_ids]))
    spilled = [spill_note("final latents", [s.latents for s in scorers], LATENT_RAM),
               spill_note("thumbnails", [s.thumbs for s in scorers], THUMB_RAM)]
    notes += [n for n in spilled if n]
    ancestral = takes_noise_sampler(p.sampler.sampler_function)
    noise = winning_noise(settings.algorithm, results, seed, p.samples.dtype, ancestral)
    best_seed, seed_note = winning_seed(results, seed)
    report = SearchReport(results=results, verifier=p.verifier.name, members=p.verifier.members, prompt=p.prompt,
                          seconds=time.perf_counter() - start, images=[s.images for s in scorers],
                          latents=[s.latents for s in scorers], thumbs=[s.thumbs for s in scorers],
                          decode=scorers[0].decode,
                          notes=notes + [n for n in (noise.note, seed_note) if n])
    announce(report, node_id)
    return best, image, top_k, noise, report, best_seed


def lineage_start(result: SearchResult, cid: int):
    """The candidate whose seed began candidate `cid`'s lineage (following parents back to one without)."""
    by_id = {c.id: c for c in result.candidates}
    c = by_id[cid]
    while c.parent is not None and c.parent in by_id:
        c = by_id[c.parent]
    return c


def winning_seed(results: Sequence[SearchResult], seed: int) -> tuple[int, Optional[str]]:
    """The `seed` output, item 0's winner's: seed + id where the winner is a plain stock run, else the seed its
    lineage started from, with the note that says so."""
    winners = [next(c for c in r.candidates if c.id == r.best_id) for r in results]
    best = winners[0]
    if best.plain:
        note = None
        if len({w.id if w.plain else None for w in winners}) > 1:
            note = (f"the seed output {candidate_seed(seed, best.id)} is batch item 0's winner (candidate "
                    f"{best.id}); the other items' winners are candidates {[w.id for w in winners[1:]]}")
        return candidate_seed(seed, best.id), note
    start = lineage_start(results[0], best.id)
    return candidate_seed(seed, start.id), (
        f"the winner (candidate {best.id}, {best.kind}) is no plain seed: the seed output "
        f"{candidate_seed(seed, start.id)} is the seed its lineage started from (candidate {start.id}), which alone "
        f"does not reproduce it; " + ("the noise output replays the winner" if best.from_noise else
                                      "it was re-noised mid-way, so no stock sampler replays it: use the latent "
                                      "output"))


def preview_decoder(node: str, mode: str, patcher) -> Optional[PreviewDecoder]:
    """The TAESD decoder `scoring_decode` asks for (None for the full VAE), found before any sampling."""
    if mode == FULL:
        return None
    latent_format = patcher.get_model_object("latent_format")
    path = find_preview_decoder(node, latent_format, mode)
    return PreviewDecoder(path, latent_format, patcher.load_device)


def winning_noise(algorithm: str, results: Sequence[SearchResult], seed: int, dtype: torch.dtype,
                  ancestral: bool) -> SearchNoise:
    """The NOISE output: every item's winner's root noise, seeded for item 0's, with what it cannot replay (the
    search's own notes already say that a Paths winner's root noise alone does not reproduce it)."""
    ids = [next(c.root for c in r.candidates if c.id == r.best_id) for r in results]
    if ancestral and len(set(ids)) > 1 and algorithm != "paths":
        note = (f"the batch items' winners are candidates {ids}: the noise output replays them exactly only with an "
                f"ODE sampler, because one seed ({candidate_seed(seed, ids[0])}) drives the sampler's own noise for "
                f"every item")
    else:
        note = None
    return SearchNoise(torch.stack([r.best_noise for r in results]).to(dtype), candidate_seed(seed, ids[0]), note)
