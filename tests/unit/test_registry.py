"""Registry: kinds, describe() against the loaders themselves, load_verifier placement, errors, lazy imports."""

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import noise_search.verifiers as verifiers
from noise_search.tests.helpers.tiny_models import make_hf_clip, random_images
from noise_search.verifiers import registry
from noise_search.verifiers.base import VerifierError
from noise_search.verifiers.loading import set_model_dirs

ALL_KINDS = ("clip_score", "aesthetic", "pickscore", "hpsv2", "clip_zero_shot", "dino_classifier", "self_similarity",
             "image_reward", "vlm_grader", "api_grader", "temporal_consistency", "motion")


def test_kinds_and_package_exports():
    assert verifiers.KINDS == ALL_KINDS
    assert verifiers.load_verifier is registry.load_verifier and verifiers.describe is registry.describe
    with pytest.raises(VerifierError, match="unknown verifier kind 'clipscore': use one of clip_score, aesthetic"):
        verifiers.load_verifier("clipscore", "x")
    with pytest.raises(VerifierError, match="self_similarity"):
        verifiers.describe("nope")


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_describe_agrees_with_the_loader_and_the_verifier_class(kind):
    """The static table (kept import-free for the UI) must match each loader's default and its class's needs."""
    info = registry.kind_info(kind)
    loader = getattr(importlib.import_module(f"noise_search.verifiers.{info.module}"), info.loader)
    assert inspect.signature(loader).parameters["model"].default == info.default_model
    classes = [c for c in vars(importlib.import_module(f"noise_search.verifiers.{info.module}")).values()
               if inspect.isclass(c) and getattr(c, "name", None) == kind]
    assert len(classes) == 1
    assert classes[0].needs == info.needs and classes[0].reference_sigma == info.reference_sigma
    assert classes[0].video == info.video
    d = verifiers.describe(kind)
    assert d["default_model"] == info.default_model and set(d["needs"]) == set(info.needs)


def test_describe_says_what_each_kind_needs():
    assert verifiers.describe("clip_score")["needs"] == ["prompt"]
    assert verifiers.describe("clip_zero_shot")["required_options"] == ["labels"]
    assert verifiers.describe("dino_classifier")["required_options"] == ["target"]
    sim = verifiers.describe("self_similarity")
    assert sim["needs"] == ["reference"] and sim["reference_sigma"] == 0.4
    assert sim["default_model"] == "facebook/dinov2-small"


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2ForImageClassification

    folder = tmp_path_factory.mktemp("registry") / "dino"
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=56,
                       num_labels=3, id2label={0: "tench", 1: "goldfish", 2: "shark"},
                       architectures=["Dinov2ForImageClassification"])
    with torch.random.fork_rng(devices=[]):
        model = Dinov2ForImageClassification(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def test_load_verifier_places_the_model_and_passes_options(dino_dir):
    from noise_search.verifiers.dino import load_dino_classifier

    x = random_images(3, 40, 48, seed=1)
    v = verifiers.load_verifier("dino_classifier", str(dino_dir), dtype=torch.float64, target="goldfish", batch_size=2)
    assert v.name == "dino_classifier" and v.dtype == torch.float64 and v.device == torch.device("cpu")
    assert v.target == 1 and v.batch_size == 2
    direct = load_dino_classifier(str(dino_dir), target=1).score(x)
    assert torch.allclose(v.score(x), direct, atol=1e-5)


def test_load_verifier_lazy_loads_the_clip_family(tmp_path):
    folder = make_hf_clip(tmp_path / "clip", seed=0)
    v = verifiers.load_verifier("clip_score", str(folder), batch_size=4)
    assert v.name == "clip_score" and v.needs == {"prompt"}
    assert v.score(random_images(2), prompt="a cat").shape == (2,)
    sim = verifiers.load_verifier("self_similarity", str(folder))
    assert sim.backbone == "clip"


@pytest.mark.parametrize("kind, options, expected", [
    ("dino_classifier", {"target": 1}, "Dinov2ForImageClassification"),
    ("self_similarity", {}, "Dinov2Model"),
    ("clip_score", {}, "CLIP"),
])
def test_missing_model_error_through_the_registry(tmp_path, kind, options, expected):
    set_model_dirs([tmp_path])
    try:
        with pytest.raises(VerifierError) as err:
            verifiers.load_verifier(kind, "no-such-model", **options)
    finally:
        set_model_dirs([])
    text = str(err.value)
    assert f"verifier '{kind}' cannot find model 'no-such-model'" in text
    assert expected in text and str(tmp_path) in text and "Source:" in text


def test_a_loader_module_that_cannot_import_is_a_verifier_error(monkeypatch):
    broken = registry.KindInfo("clip_score", "no_such_module", "load", "m", "s")
    monkeypatch.setitem(registry._BY_KIND, "clip_score", broken)
    with pytest.raises(VerifierError, match="importing verifiers.no_such_module failed"):
        verifiers.load_verifier("clip_score", "m")


def test_importing_the_package_does_not_import_model_code():
    root = Path(__file__).resolve().parents[2]
    pack = str(root / "benchmarks" / "_pack.py")
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('p', {pack!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m.load_pack(); "
            "import noise_search.verifiers as v; v.describe('hpsv2'); "
            "heavy = [n for n in ('transformers', 'open_clip', 'noise_search.verifiers.clip', "
            "'noise_search.verifiers.dino') if n in sys.modules]; "
            "print(heavy); assert not heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ensemble_of_loaded_verifiers(dino_dir, tmp_path):
    """Real members through the registry: the ensemble needs their union, returns their raw scores, and its output
    equals combine() of those scores over the batch."""
    clip = make_hf_clip(tmp_path / "clip", seed=1)
    members = [verifiers.load_verifier("dino_classifier", str(dino_dir), target=0),
               verifiers.load_verifier("self_similarity", str(clip)),
               verifiers.load_verifier("dino_classifier", str(dino_dir), target=2)]
    ens = verifiers.Ensemble(members, weights=[1.0, 2.0, 1.0])
    assert ens.needs == {"reference"} and ens.reference_sigma == 0.4
    x, ref = random_images(4, seed=2), random_images(4, seed=3)
    out = ens.score(x, references=ref)
    raw = ens.member_scores()
    assert list(raw) == ["dino_classifier", "self_similarity", "dino_classifier_2"]
    for name, member in zip(raw, members):
        assert torch.allclose(raw[name], member.score(x, references=ref), atol=1e-6)
    assert torch.equal(out, verifiers.combine(raw, weights=[1.0, 2.0, 1.0]))
