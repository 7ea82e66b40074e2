"""A Noise Search node's run: check everything, search every latent batch item, build the outputs and the report."""

from __future__ import annotations

import os
import time
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


def run_node_search(*, node: str, node_id: Optional[str], guider, sampler, sampler_input: str, sigmas, latent: dict,
                    seed: int, vae, verifier, prompt: Optional[str], settings,
                    expert: Optional[Expert] = None) -> tuple:
    """Search every latent batch item (through both models where a second `expert` takes over at its switch step);
    return (latent, image, top_k, noise, report, seed) as the nodes output them."""
    start = time.perf_counter()
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
    items = samples.shape[0]
    notes = settings.notes()
    if expert is not None:
        notes.append(f"two experts: model runs steps 0-{expert.switch}, model_2 steps {expert.switch}-"
                     f"{len(sigmas) - 1} (switch at sigma {switch:.4g}), as two chained KSamplerAdvanced nodes")
    preview = preview_decoder(node, settings.scoring_decode, patcher)
    if preview is not None:
        notes.append(f"scoring decode: {settings.scoring_decode} ({preview.name}); every output image is decoded "
                     f"by the VAE")
    pbar = comfy.utils.ProgressBar(planned * items)
    outs, results, scorers = [], [], []
    spill_dir = folder_paths.get_temp_directory()
    os.makedirs(spill_dir, exist_ok=True)
    for b in range(items):
        noise = ItemNoise(samples, b, seed, latent.get("batch_index"))
        scorer = Scorer(node, vae, verifier, prompt, keep=settings.top_k, preview=preview,
                        preview_mode=settings.scoring_decode, latents=TensorStore(LATENT_RAM // items, spill_dir),
                        thumbs=TensorStore(THUMB_RAM // items, spill_dir))
        mask = item_mask(latent.get("noise_mask"), samples, b)
        search = SearchSampler(sampler=sampler, algorithm=settings.algorithm, config=settings.config(),
                               noise=noise, cost=cost, scorer=scorer, batch_size=settings.batch_size,
                               progress=make_progress(pbar, planned * b, scorer, node_id, b, items),
                               expert=expert, item=(samples[b:b + 1], mask))
        first = expert.parts()[0] if expert is not None else sigmas
        out = guider.sample(noise(0).unsqueeze(0).to(samples.dtype), samples[b:b + 1], search, first,
                            denoise_mask=mask, callback=None, disable_pbar=True, seed=seed)
        out = search.output if expert is not None else out
        outs.append(out.to(comfy.model_management.intermediate_device()))
        scorer.finish(search.result)
        results.append(search.result)
        scorers.append(scorer)
        notes += [f"item {b}: {n}" if items > 1 else n for n in search.notes]

    best = stock_latent_out(latent, torch.cat(outs))
    image = image_batch(s.images[r.best_id] for s, r in zip(scorers, results))
    top_k = stock_latent_out({k: v for k, v in latent.items() if k not in ("noise_mask", "batch_index")},
                             torch.stack([s.latents[i] for s, r in zip(scorers, results) for i in r.topk_ids]))
    spilled = [spill_note("final latents", [s.latents for s in scorers], LATENT_RAM),
               spill_note("thumbnails", [s.thumbs for s in scorers], THUMB_RAM)]
    notes += [n for n in spilled if n]
    ancestral = takes_noise_sampler(sampler.sampler_function)
    noise = winning_noise(settings.algorithm, results, seed, samples.dtype, ancestral)
    best_seed, seed_note = winning_seed(results, seed)
    report = SearchReport(results=results, verifier=verifier.name, members=verifier.members, prompt=prompt,
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
