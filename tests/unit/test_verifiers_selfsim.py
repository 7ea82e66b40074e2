"""Self-similarity verifier on tiny random-weight DINOv2, SigLIP and CLIP models saved in the real formats."""

import json

import pytest
import torch
import torch.nn.functional as F

from noise_search.tests.helpers.tiny_models import (
    build_module,
    make_hf_clip,
    make_open_clip_checkpoint,
    register_tiny_open_clip,
)
from noise_search.verifiers.base import VerifierError
from noise_search.verifiers.loading import set_model_dirs
from noise_search.verifiers.selfsim import infer_backbone, load_self_similarity

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from transformers import (
        BitImageProcessor,
        Dinov2Config,
        Dinov2Model,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    root = tmp_path_factory.mktemp("selfsim")
    build_module(lambda: Dinov2Model(Dinov2Config(**TINY, patch_size=14, image_size=56)),
                 0).save_pretrained(root / "dinov2")
    BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56},
                      image_mean=[0.485, 0.456, 0.406],
                      image_std=[0.229, 0.224, 0.225]).save_pretrained(root / "dinov2")
    vision = dict(**TINY, image_size=48, patch_size=16)
    text = dict(**TINY, vocab_size=64, max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    build_module(lambda: SiglipModel(SiglipConfig(vision_config=vision, text_config=text)),
                 1).save_pretrained(root / "siglip")
    SiglipImageProcessor(size={"height": 48, "width": 48}).save_pretrained(root / "siglip")
    build_module(lambda: SiglipVisionModel(SiglipVisionConfig(**vision)), 2).save_pretrained(root / "siglip-vision")
    make_hf_clip(root / "clip", seed=3)
    make_open_clip_checkpoint(root / "tiny_open_clip.safetensors", seed=4)
    return root


def smooth(n, h=60, w=80, seed=0):
    """Low-frequency images in [0.1, 0.9], so the resize overshoot our preprocessing clamps never occurs."""
    low = torch.rand(n, 3, 5, 7, generator=torch.Generator().manual_seed(seed))
    return (F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False) * 0.8 + 0.1).permute(0, 2, 3, 1)


def pixels(folder, x, processor=None):
    from transformers import AutoImageProcessor

    proc = processor or AutoImageProcessor.from_pretrained(str(folder))
    return proc(images=list(x.permute(0, 3, 1, 2)), do_rescale=False, return_tensors="pt")["pixel_values"]


def independent_cosine(feats_of, folder, images, references, processor=None):
    with torch.no_grad():
        a, b = feats_of(pixels(folder, images, processor)), feats_of(pixels(folder, references, processor))
    return F.cosine_similarity(a.double(), b.double(), dim=-1)


def test_dinov2_cls_cosine(folders):
    from transformers import Dinov2Model

    v = load_self_similarity(str(folders / "dinov2"), batch_size=2)
    assert v.backbone == "dinov2" and v.needs == {"reference"} and v.reference_sigma == 0.4
    x, ref = smooth(3, seed=1), smooth(3, seed=2)
    net = Dinov2Model.from_pretrained(str(folders / "dinov2")).eval()
    expected = independent_cosine(lambda p: net(pixel_values=p).last_hidden_state[:, 0], folders / "dinov2", x, ref)
    got = v.score(x, references=ref)
    assert got.dtype == torch.float32 and got.shape == (3,)
    assert torch.allclose(got.double(), expected, atol=1e-5)


def test_siglip_pooled_cosine_from_a_full_siglip_checkpoint(folders):
    from transformers import SiglipModel

    v = load_self_similarity(str(folders / "siglip"))
    assert v.backbone == "siglip"
    x, ref = smooth(2, seed=3), smooth(2, seed=4)
    net = SiglipModel.from_pretrained(str(folders / "siglip")).eval()
    expected = independent_cosine(lambda p: net.vision_model(pixel_values=p).pooler_output, folders / "siglip", x, ref)
    assert torch.allclose(v.score(x, references=ref).double(), expected, atol=1e-5)


def test_siglip_vision_folder_without_processor_uses_siglip_defaults(folders):
    from transformers import SiglipImageProcessor, SiglipVisionModel

    folder = folders / "siglip-vision"
    assert not (folder / "preprocessor_config.json").exists()
    v = load_self_similarity(str(folder), backbone="siglip")
    x, ref = smooth(2, seed=5), smooth(2, seed=6)
    net = SiglipVisionModel.from_pretrained(str(folder)).eval()
    proc = SiglipImageProcessor(size={"height": 48, "width": 48})  # the class defaults at the model's image_size
    expected = independent_cosine(lambda p: net(pixel_values=p).pooler_output, folder, x, ref, proc)
    assert torch.allclose(v.score(x, references=ref).double(), expected, atol=1e-5)


def test_hf_clip_projected_embedding_cosine(folders):
    from transformers import CLIPModel

    v = load_self_similarity(str(folders / "clip"))
    assert v.backbone == "clip"
    x, ref = smooth(2, seed=7), smooth(2, seed=8)
    net = CLIPModel.from_pretrained(str(folders / "clip")).eval()

    def feats(p):
        out = net.get_image_features(pixel_values=p)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    expected = independent_cosine(feats, folders / "clip", x, ref)
    assert torch.allclose(v.score(x, references=ref).double(), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["dinov2", "siglip", "clip", "open_clip"])
def test_identical_images_score_one_and_others_less(folders, name):
    if name == "open_clip":
        v = load_self_similarity(str(folders / "tiny_open_clip.safetensors"), arch=register_tiny_open_clip())
    else:
        v = load_self_similarity(str(folders / name))
    x = smooth(3, seed=9)
    assert torch.allclose(v.score(x, references=x), torch.ones(3), atol=1e-5)
    other = v.score(x, references=smooth(3, seed=10))
    assert (other < 1 - 1e-4).all() and (other >= -1 - 1e-6).all()


def test_order_batching_and_determinism(folders):
    v = load_self_similarity(str(folders / "dinov2"), batch_size=2)
    x, ref = smooth(5, seed=11), smooth(5, seed=12)
    full = v.score(x, references=ref)
    assert torch.equal(full, v.score(x, references=ref))
    one_by_one = torch.cat([v.score(x[i:i + 1], references=ref[i:i + 1]) for i in range(5)])
    assert torch.allclose(full, one_by_one, atol=1e-5)
    perm = torch.tensor([2, 4, 0, 3, 1])
    assert torch.allclose(v.score(x[perm], references=ref[perm]), full[perm], atol=1e-5)
    # references may have another size than the final images (e.g. a decoded x0 preview)
    assert v.score(x, references=smooth(5, 30, 40, seed=12)).shape == (5,)


def test_reference_errors(folders):
    v = load_self_similarity(str(folders / "dinov2"))
    x = smooth(2)
    with pytest.raises(VerifierError, match="needs reference images"):
        v.score(x)
    with pytest.raises(VerifierError, match="2 images but 3 reference"):
        v.score(x, references=smooth(3))


def test_backbone_inference_and_option_errors(folders, tmp_path):
    assert infer_backbone(folders / "dinov2") == "dinov2"
    assert infer_backbone(folders / "siglip") == infer_backbone(folders / "siglip-vision") == "siglip"
    assert infer_backbone(folders / "clip") == infer_backbone(folders / "tiny_open_clip.safetensors") == "clip"
    with pytest.raises(VerifierError, match="holds a 'dinov2' model"):
        load_self_similarity(str(folders / "dinov2"), backbone="siglip")
    with pytest.raises(VerifierError, match="unknown backbone 'vit'"):
        load_self_similarity(str(folders / "dinov2"), backbone="vit")
    with pytest.raises(VerifierError, match="no option 'target'"):
        load_self_similarity(str(folders / "dinov2"), target=3)
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(VerifierError, match="cannot tell the backbone.*model_type 'vit'"):
        load_self_similarity(str(tmp_path / "vit"))


def test_missing_model_error_names_expectation_and_source(tmp_path):
    set_model_dirs([tmp_path])
    try:
        with pytest.raises(VerifierError) as err:
            load_self_similarity("facebook/dinov2-small")
    finally:
        set_model_dirs([])
    text = str(err.value)
    assert "Dinov2Model" in text and "SiglipVisionModel" in text and str(tmp_path) in text
    assert "https://huggingface.co/facebook/dinov2-small" in text and "allow_download" in text
