"""DINOv2 classifier verifier on a tiny random-weight Dinov2ForImageClassification saved in the real HF format."""


import pytest
import torch

from noise_search.tests.helpers.tiny_models import build_module
from noise_search.verifiers.base import VerifierError
from noise_search.verifiers.dino import DINOV2_PREPROCESS, SOURCE, load_dino_classifier, resolve_target
from noise_search.verifiers.hf import image_preprocess
from noise_search.verifiers.loading import set_model_dirs

LABELS = {
    0: "tench, Tinca tinca",
    1: "goldfish, Carassius auratus",
    2: "great white shark, white shark, man-eater, Carcharodon carcharias",
    3: "crane",
    4: "hammerhead, hammerhead shark",
    5: "crane",
}


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2ForImageClassification

    folder = tmp_path_factory.mktemp("models") / "tiny-dinov2-classifier"
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14,
                       image_size=224, num_labels=len(LABELS), id2label=LABELS,
                       label2id={v: k for k, v in LABELS.items()}, architectures=["Dinov2ForImageClassification"])
    build_module(lambda: Dinov2ForImageClassification(cfg), 0).eval().save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def verifier(dino_dir):
    return load_dino_classifier(str(dino_dir), target="goldfish", batch_size=2)


def images(n, h=96, w=128, seed=1):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def smooth_images(n, h, w, seed=1):
    """Low-frequency images in [0.1, 0.9]: bicubic overshoot stays inside 0..1, where clamping (ours, PIL) is a
    no-op."""
    low = torch.rand(n, 3, 6, 8, generator=torch.Generator().manual_seed(seed))
    x = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return (x * 0.8 + 0.1).permute(0, 2, 3, 1)


@pytest.mark.parametrize("shape", [(300, 400), (400, 300), (224, 224), (100, 90)])
def test_preprocessing_matches_the_checkpoints_image_processor(dino_dir, shape):
    """Same torch kernels as the default (torchvision-backend) processor on float input: equal up to float32
    rounding (1e-5). Ours also clamps the resized image to 0..1 as 8-bit pipelines do, hence smooth test images."""
    from transformers import AutoImageProcessor

    x = smooth_images(2, *shape)
    ours = image_preprocess(dino_dir, "dino_classifier", SOURCE, DINOV2_PREPROCESS)(x)
    ref = AutoImageProcessor.from_pretrained(str(dino_dir))(
        images=list(x.permute(0, 3, 1, 2)), do_rescale=False, return_tensors="pt")["pixel_values"]
    assert ours.shape == ref.shape == (2, 3, 224, 224)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    assert torch.allclose(DINOV2_PREPROCESS(x), ref, atol=1e-5, rtol=0)  # the default for folders without the file


def test_preprocessing_is_close_to_the_pil_processor(dino_dir):
    """The PIL processor (how the checkpoint was trained) resizes uint8 images in two passes, rounding to uint8 after
    each: on a uint8-valued image we stay within 1.5 grey levels (1.5 / 255 / std 0.224 after normalising), and
    within half a grey level on average."""
    from PIL import Image
    from transformers import AutoImageProcessor

    x = (smooth_images(1, 300, 400) * 255).round() / 255
    ours = image_preprocess(dino_dir, "dino_classifier", SOURCE, DINOV2_PREPROCESS)(x)
    pil = Image.fromarray((x[0] * 255).round().byte().numpy())
    processor = AutoImageProcessor.from_pretrained(str(dino_dir), backend="pil")
    ref = processor(images=[pil], return_tensors="pt")["pixel_values"]
    grey = 1 / 255 / 0.224
    assert (ours - ref).abs().max() < 1.5 * grey and (ours - ref).abs().mean() < 0.5 * grey


def test_score_is_the_log_softmax_of_the_target_logit(verifier, dino_dir):
    from transformers import AutoImageProcessor, Dinov2ForImageClassification

    x = smooth_images(3, 96, 128)
    net = Dinov2ForImageClassification.from_pretrained(str(dino_dir)).eval()
    processor = AutoImageProcessor.from_pretrained(str(dino_dir))
    pixels = processor(images=list(x.permute(0, 3, 1, 2)), do_rescale=False, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = net(pixel_values=pixels).logits.double()
    expected = logits[:, 1] - torch.logsumexp(logits, dim=-1)
    got = verifier.score(x)
    assert got.dtype == torch.float32 and got.shape == (3,)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    assert (got < 0).all()


def test_order_determinism_and_batching(verifier):
    x = images(5, seed=3)
    full = verifier.score(x)  # batch_size 2: three model calls
    assert torch.equal(full, verifier.score(x))
    one_by_one = torch.cat([verifier.score(x[i:i + 1]) for i in range(5)])
    assert torch.allclose(full, one_by_one, atol=1e-5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(verifier.score(x[perm]), full[perm], atol=1e-5)
    assert verifier.score(x[:0]).shape == (0,)


def test_label_text_and_index_targets_agree(dino_dir):
    x = images(2)
    by_index = load_dino_classifier(str(dino_dir), target=2).score(x)
    for target in ("great white shark", "  Man-Eater ", "CARCHARODON CARCHARIAS", "2"):
        assert torch.equal(load_dino_classifier(str(dino_dir), target=target).score(x), by_index)
    assert not torch.equal(load_dino_classifier(str(dino_dir), target=4).score(x), by_index)


def test_target_resolution_errors():
    with pytest.raises(VerifierError, match=r"close matches: 'goldfish' \(1\)"):
        resolve_target("goldfsh", LABELS)
    with pytest.raises(VerifierError, match=r"matches no class.*give a class index"):
        resolve_target("submarine", LABELS)
    with pytest.raises(VerifierError, match=r"several classes \(3: 'crane'; 5: 'crane'\)"):
        resolve_target("crane", LABELS)
    with pytest.raises(VerifierError, match="out of range"):
        resolve_target(6, LABELS)
    with pytest.raises(VerifierError, match="needs a target"):
        resolve_target(None, LABELS)
    assert resolve_target("hammerhead shark", LABELS) == 4


def test_model_follows_device_and_dtype(dino_dir):
    v = load_dino_classifier(str(dino_dir), target=1)
    x = images(2)
    ref = v.score(x)
    v.to(dtype=torch.float64)
    assert v.dtype == torch.float64
    got = v.score(x)
    assert got.dtype == torch.float32 and torch.allclose(got, ref, atol=1e-4)


def test_loads_a_pytorch_model_bin_folder(dino_dir, tmp_path):
    """facebook/dinov2-small-imagenet1k-1-layer's main branch ships pytorch_model.bin only (no safetensors)."""
    import shutil

    from safetensors.torch import load_file

    folder = tmp_path / "bin-only"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copyfile(dino_dir / name, folder / name)
    torch.save(load_file(str(dino_dir / "model.safetensors")), folder / "pytorch_model.bin")
    x = images(2)
    assert torch.equal(load_dino_classifier(str(folder), target=1).score(x),
                       load_dino_classifier(str(dino_dir), target=1).score(x))


def test_a_backbone_without_head_is_refused(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    with torch.random.fork_rng(devices=[]):
        cfg = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        Dinov2Model(cfg).save_pretrained(tmp_path / "backbone")
    with pytest.raises(VerifierError, match="expected one of \\['Dinov2ForImageClassification'\\]"):
        load_dino_classifier(str(tmp_path / "backbone"), target=0)


def test_missing_model_names_file_folders_and_source(tmp_path, dino_dir):
    set_model_dirs([tmp_path])
    try:
        with pytest.raises(VerifierError) as err:
            load_dino_classifier("no-such-dino-folder", target=0)
        text = str(err.value)
        assert "Dinov2ForImageClassification" in text and str(tmp_path) in text
        assert "huggingface.co/facebook/dinov2-small-imagenet1k-1-layer" in text
        (tmp_path / "tiny").symlink_to(dino_dir)
        assert load_dino_classifier("tiny", target="tench").target == 0  # found by name under the model folder
    finally:
        set_model_dirs([])
    with pytest.raises(VerifierError, match="has no option 'labels'; its options are batch_size, target"):
        load_dino_classifier(str(dino_dir), target=0, labels="a, b")
    with pytest.raises(VerifierError, match="'batch_size' must be a positive integer"):
        load_dino_classifier(str(dino_dir), target=0, batch_size=0)
