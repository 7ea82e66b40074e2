"""Model folders saved by the installed transformers load and score exactly like the hub repos' layout.

transformers 5 saves a processor as processor_config.json (the image processor nested in it, tokenizer.json and
tokenizer_config.json beside), where the hub repos ship preprocessor_config.json, vocab.json and merges.txt. The
verifiers load processors with transformers' Auto classes, so both layouts must give the same scores: same weights,
same image processor settings (not the defaults: a folder whose processor went unread would score differently).
"""

import shutil

import pytest
import torch

from noise_search.tests.helpers.tiny_models import (
    make_aesthetic_mlp,
    make_hf_clip,
    make_hf_dinov2,
    make_hf_processor,
    make_hf_siglip,
    random_images,
)
from noise_search.verifiers.registry import load_verifier

LABELS = {0: "tench, Tinca tinca", 1: "goldfish, Carassius auratus", 2: "great white shark"}
DINO_MEAN = [0.3, 0.4, 0.5]  # not the ImageNet mean of the DINOv2 default
SIGLIP_MEAN = [0.4, 0.45, 0.55]  # not SigLIP's default 0.5


def build(root, as_processor):
    """The same tiny models, their processors saved as the hub repos ship them or by a processor's save_pretrained."""
    root.mkdir()
    make_hf_clip(root / "clip", seed=1, as_processor=as_processor)
    make_hf_clip(root / "pick", seed=2, with_processor=False)
    make_hf_processor(root / "proc", as_processor=as_processor)
    make_aesthetic_mlp(root / "mlp.pth", input_dim=16, seed=3)
    make_hf_dinov2(root / "dino_cls", seed=4, labels=LABELS, image_mean=DINO_MEAN, as_processor=as_processor)
    make_hf_dinov2(root / "dinov2", seed=5, image_mean=DINO_MEAN, as_processor=as_processor)
    make_hf_siglip(root / "siglip", seed=6, image_mean=SIGLIP_MEAN, as_processor=as_processor)
    return root


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("transformers 4 saves processors as preprocessor_config.json, the hub layout")
    root = tmp_path_factory.mktemp("layouts")
    return {"hub": build(root / "hub", as_processor=False), "saved": build(root / "saved", as_processor=True)}


CASES = {
    "clip_score": ("clip_score", "clip", {}),
    "clip_zero_shot": ("clip_zero_shot", "clip", {"labels": "cat, dog, bird", "target": "dog"}),
    "aesthetic": ("aesthetic", "mlp.pth", {"clip_model": "clip"}),
    "pickscore": ("pickscore", "pick", {"processor": "proc"}),
    "dino_classifier": ("dino_classifier", "dino_cls", {"target": "goldfish"}),
    "self_similarity-dinov2": ("self_similarity", "dinov2", {}),
    "self_similarity-siglip": ("self_similarity", "siglip", {}),
    "self_similarity-clip": ("self_similarity", "clip", {}),
}


def scores(root, kind, model, options):
    options = {k: str(root / v) if k in ("clip_model", "processor") else v for k, v in options.items()}
    verifier = load_verifier(kind, str(root / model), **options)
    images = random_images(3, 40, 48, seed=1)
    return verifier.score(images, prompt="a cat", references=random_images(3, 40, 48, seed=2))


def test_the_saved_layout_is_the_transformers_5_one(layouts):
    for folder in ("clip", "proc", "dino_cls", "dinov2", "siglip"):
        names = {p.name for p in (layouts["saved"] / folder).iterdir()}
        assert "processor_config.json" in names and "preprocessor_config.json" not in names, (folder, names)
    assert {"vocab.json", "merges.txt"}.isdisjoint(p.name for p in (layouts["saved"] / "proc").iterdir())


@pytest.mark.parametrize("case", CASES)
def test_saved_layout_scores_like_the_hub_layout(layouts, case):
    kind, model, options = CASES[case]
    saved, hub = scores(layouts["saved"], kind, model, options), scores(layouts["hub"], kind, model, options)
    assert saved.shape == (3,) and torch.isfinite(saved).all()
    assert torch.equal(saved, hub)


@pytest.mark.parametrize("folder, options", [("dinov2", {}), ("siglip", {})])
def test_the_image_processor_is_read_not_defaulted(layouts, tmp_path, folder, options):
    """Without processor files these backbones fall back to their family's defaults, which the tiny models' settings
    are not: so equal scores above mean the nested image processor was read."""
    bare = tmp_path / folder
    shutil.copytree(layouts["saved"] / folder, bare)
    (bare / "processor_config.json").unlink()
    defaulted = scores(tmp_path, "self_similarity", folder, options)
    assert not torch.allclose(defaulted, scores(layouts["saved"], "self_similarity", folder, options), atol=1e-4)
