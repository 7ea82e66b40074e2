"""Damaged model files, for every verifier kind and file format: a truncated or corrupt weights file, a broken or
foreign config.json, a broken processor file. Each must be a VerifierError naming the kind, the file, what is wrong
and the fix (what the Load Verifier node shows), never a bare safetensors / torch / json / transformers error."""

import json
import shutil

import numpy as np
import pytest
import torch

from noise_search.tests.helpers.tiny_models import (
    TINY_OPEN_CLIP,
    make_aesthetic_mlp,
    make_hf_clip,
    make_hf_dinov2,
    make_hf_processor,
    make_hf_siglip,
    make_open_clip_checkpoint,
    make_open_clip_folder,
    register_tiny_open_clip,
)
from noise_search.verifiers.base import VerifierError
from noise_search.verifiers.registry import load_verifier

LABELS = {0: "tench, Tinca tinca", 1: "goldfish, Carassius auratus"}
ZERO_SHOT = {"labels": "cat, dog"}
OPEN_CLIP = {"arch": TINY_OPEN_CLIP}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One tiny model per format, never modified: each test damages a copy."""
    from safetensors.torch import load_file, save_file
    from transformers import CLIPModel

    root = tmp_path_factory.mktemp("pristine")
    register_tiny_open_clip()
    make_hf_clip(root / "clip", seed=1)
    shutil.copytree(root / "clip", root / "clip_bin")
    torch.save(CLIPModel.from_pretrained(str(root / "clip")).state_dict(), root / "clip_bin" / "pytorch_model.bin")
    (root / "clip_bin" / "model.safetensors").unlink()
    make_hf_clip(root / "pick", seed=2, with_processor=False)
    make_hf_processor(root / "proc")
    make_open_clip_checkpoint(root / "oc.pt", seed=3)
    make_open_clip_checkpoint(root / "oc.safetensors", seed=4)
    make_open_clip_folder(root / "oc_folder", seed=5)
    make_open_clip_checkpoint(root / "HPS_v2.1_compressed.pt", seed=6, wrap_state_dict=True, dtype=torch.float16)
    make_aesthetic_mlp(root / "mlp.pth", input_dim=16, seed=7)
    save_file(torch.load(root / "mlp.pth"), str(root / "mlp.safetensors"))
    make_hf_dinov2(root / "dino_cls", seed=8, labels=LABELS)
    shutil.copytree(root / "dino_cls", root / "dino_cls_bin")
    torch.save(load_file(str(root / "dino_cls" / "model.safetensors")), root / "dino_cls_bin" / "pytorch_model.bin")
    (root / "dino_cls_bin" / "model.safetensors").unlink()
    make_hf_dinov2(root / "dinov2", seed=9)
    make_hf_siglip(root / "siglip", seed=10)
    return root


@pytest.fixture
def models(pristine, tmp_path):
    """A private copy of every pristine model, free to damage."""
    shutil.copytree(pristine, tmp_path / "m")
    return tmp_path / "m"


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def corrupt(path):
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


# kind, model (relative to the models folder), options, the weights file to damage
WEIGHTS_CASES = {
    "clip_score-hf-safetensors": ("clip_score", "clip", {}, "clip/model.safetensors"),
    "clip_score-hf-bin": ("clip_score", "clip_bin", {}, "clip_bin/pytorch_model.bin"),
    "clip_score-open_clip-pt": ("clip_score", "oc.pt", OPEN_CLIP, "oc.pt"),
    "clip_score-open_clip-folder": ("clip_score", "oc_folder", {}, "oc_folder/open_clip_model.safetensors"),
    "clip_zero_shot-hf": ("clip_zero_shot", "clip", ZERO_SHOT, "clip/model.safetensors"),
    "clip_zero_shot-open_clip-safetensors": ("clip_zero_shot", "oc.safetensors", {**ZERO_SHOT, **OPEN_CLIP},
                                             "oc.safetensors"),
    "aesthetic-head-pth": ("aesthetic", "mlp.pth", {"clip_model": "clip"}, "mlp.pth"),
    "aesthetic-head-safetensors": ("aesthetic", "mlp.safetensors", {"clip_model": "clip"}, "mlp.safetensors"),
    "aesthetic-clip_model": ("aesthetic", "mlp.pth", {"clip_model": "clip"}, "clip/model.safetensors"),
    "pickscore": ("pickscore", "pick", {"processor": "proc"}, "pick/model.safetensors"),
    "hpsv2-pt": ("hpsv2", "HPS_v2.1_compressed.pt", OPEN_CLIP, "HPS_v2.1_compressed.pt"),
    "dino_classifier-safetensors": ("dino_classifier", "dino_cls", {"target": 1}, "dino_cls/model.safetensors"),
    "dino_classifier-bin": ("dino_classifier", "dino_cls_bin", {"target": 1}, "dino_cls_bin/pytorch_model.bin"),
    "self_similarity-dinov2": ("self_similarity", "dinov2", {}, "dinov2/model.safetensors"),
    "self_similarity-siglip": ("self_similarity", "siglip", {}, "siglip/model.safetensors"),
    "self_similarity-open_clip": ("self_similarity", "oc.safetensors", OPEN_CLIP, "oc.safetensors"),
}


def load(kind, models, model, options):
    """Load through the registry, with model names (and clip_model / processor options) inside `models`."""
    options = {k: str(models / v) if k in ("clip_model", "processor") else v for k, v in options.items()}
    return load_verifier(kind, str(models / model), **options)


def load_error(kind, models, model, options) -> VerifierError:
    with pytest.raises(VerifierError) as err:
        load(kind, models, model, options)
    assert f"verifier '{kind}'" in str(err.value)
    return err.value


@pytest.mark.parametrize("case", WEIGHTS_CASES)
def test_pristine_models_load(models, case):
    """The control: every undamaged model of the cases below loads (so the errors come from the damage)."""
    kind, model, options, _ = WEIGHTS_CASES[case]
    assert load(kind, models, model, options).model is not None


@pytest.mark.parametrize("damage", [truncate, corrupt], ids=["truncated", "corrupt"])
@pytest.mark.parametrize("case", WEIGHTS_CASES)
def test_damaged_weights_name_the_file_and_the_fix(models, case, damage):
    kind, model, options, target = WEIGHTS_CASES[case]
    damage(models / target)
    msg = str(load_error(kind, models, model, options))
    assert str(models / target) in msg
    assert "truncated or corrupt" in msg and "Re-download it from" in msg


def test_the_library_error_stays_chained(models):
    """The safetensors / torch.load error is kept as the cause, for the log."""
    import pickle

    from safetensors import SafetensorError

    truncate(models / "clip" / "model.safetensors")
    err = load_error("clip_score", models, "clip", {})
    assert isinstance(err.__cause__, SafetensorError) and "incomplete metadata" in str(err)
    torch.save({"layers.0.weight": torch.nn.Linear(2, 2)}, models / "mlp.pth")  # a pickled module, not tensors
    err = load_error("aesthetic", models, "mlp.pth", {"clip_model": "clip"})
    assert isinstance(err.__cause__, pickle.UnpicklingError)
    assert str(models / "mlp.pth") in str(err) and "holds pickled Python objects instead of tensors" in str(err)


def test_a_git_lfs_pointer_is_named_as_such(models):
    (models / "HPS_v2.1_compressed.pt").write_text("version https://git-lfs.github.com/spec/v1\n"
                                                   "oid sha256:0123\nsize 1973\n")
    msg = str(load_error("hpsv2", models, "HPS_v2.1_compressed.pt", OPEN_CLIP))
    assert str(models / "HPS_v2.1_compressed.pt") in msg and "is a Git LFS pointer" in msg
    assert "Re-download it from https://huggingface.co/xswu/HPSv2" in msg  # the known file, found by its name


# kind, model folder, options, the folder whose config.json is damaged, another model's config for that folder
CONFIG_CASES = {
    "clip_score": ("clip_score", "clip", {}, "clip", "dino_cls"),
    "clip_zero_shot": ("clip_zero_shot", "clip", ZERO_SHOT, "clip", "dinov2"),
    "aesthetic-clip_model": ("aesthetic", "mlp.pth", {"clip_model": "clip"}, "clip", "siglip"),
    "pickscore": ("pickscore", "pick", {"processor": "proc"}, "pick", "dino_cls"),
    "dino_classifier": ("dino_classifier", "dino_cls", {"target": 1}, "dino_cls", "clip"),
    "self_similarity-dinov2": ("self_similarity", "dinov2", {"backbone": "dinov2"}, "dinov2", "siglip"),
    "self_similarity-siglip": ("self_similarity", "siglip", {"backbone": "siglip"}, "siglip", "clip"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_broken_config_json_names_the_line(models, case):
    kind, model, options, folder, _ = CONFIG_CASES[case]
    truncate(models / folder / "config.json")
    msg = str(load_error(kind, models, model, options))
    assert str(models / folder / "config.json") in msg
    assert "is not valid JSON" in msg and "at line" in msg and "Re-download it from" in msg


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_json_of_another_model_is_named(models, case):
    kind, model, options, folder, other = CONFIG_CASES[case]
    shutil.copyfile(models / other / "config.json", models / folder / "config.json")
    msg = str(load_error(kind, models, model, options))
    wanted = json.loads((models / folder / "config.json").read_text())["model_type"]
    assert str(models / folder / "config.json") in msg and f"'{wanted}'" in msg


@pytest.mark.parametrize("kind, folder, edit", [
    ("clip_score", "clip", lambda cfg: cfg.pop("vision_config")),  # a missing key: transformers' default sizes
    ("self_similarity", "dinov2", lambda cfg: cfg.update(hidden_size=16)),  # an edited size
], ids=["missing-key", "edited-size"])
def test_config_json_that_does_not_fit_the_weights(models, kind, folder, edit):
    """Valid JSON of the right model type whose sizes differ from the weights: transformers would initialise every
    misshapen tensor at random."""
    cfg = json.loads((models / folder / "config.json").read_text())
    edit(cfg)
    (models / folder / "config.json").write_text(json.dumps(cfg))
    msg = str(load_error(kind, models, folder, {}))
    assert f"the weights in {models / folder / 'model.safetensors'} do not fit {models / folder / 'config.json'}" in msg
    assert "re-download the folder" in msg


def test_config_json_holding_no_object(models):
    (models / "dino_cls" / "config.json").write_text("[1, 2]")
    msg = str(load_error("dino_classifier", models, "dino_cls", {"target": 1}))
    assert str(models / "dino_cls" / "config.json") in msg and "holds a JSON list" in msg


@pytest.mark.parametrize("name", ["preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"])
def test_broken_processor_file_is_named(models, name):
    if not (models / "proc" / name).is_file():
        pytest.skip(f"this transformers saves no {name}")
    truncate(models / "proc" / name)
    msg = str(load_error("pickscore", models, "pick", {"processor": "proc"}))
    assert str(models / "proc" / name) in msg and "is not valid JSON" in msg and "Re-download it from" in msg


def test_corrupt_text_file_is_named(models):
    corrupt(models / "siglip" / "preprocessor_config.json")
    msg = str(load_error("self_similarity", models, "siglip", {}))
    assert str(models / "siglip" / "preprocessor_config.json") in msg and "corrupt" in msg


def test_open_clip_folder_without_model_cfg_or_weights(models):
    (models / "oc_folder" / "open_clip_model.safetensors").unlink()
    msg = str(load_error("clip_score", models, "oc_folder", {}))
    assert f"the open_clip folder {models / 'oc_folder'} has no weights" in msg
    (models / "oc_folder" / "open_clip_config.json").write_text(json.dumps({"preprocess_cfg": {}}))
    msg = str(load_error("clip_score", models, "oc_folder", {}))
    assert str(models / "oc_folder" / "open_clip_config.json") in msg and "'model_cfg'" in msg
