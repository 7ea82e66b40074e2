"""Model resolution: explicit path, registered model folders, the Hugging Face cache, opt-in download, errors."""

import fnmatch
import inspect

import pytest

from noise_search.tests.helpers.tiny_models import make_hf_cache_repo
from noise_search.verifiers import aesthetic, clip, loading, preference
from noise_search.verifiers.base import VerifierError

EXPECT = "a CLIP checkpoint folder with config.json and model.safetensors"
SOURCE = "https://huggingface.co/org/tiny-clip"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No registered folders, an empty HF cache under tmp, offline hub."""
    import huggingface_hub.constants

    saved = loading.model_dirs()
    loading.set_model_dirs([])
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    yield cache
    loading.set_model_dirs(saved)


def _resolve(model, **kw):
    return loading.resolve(model, verifier="clip_score", expect=EXPECT, source=SOURCE, **kw)


def test_existing_absolute_and_cwd_relative_paths(tmp_path, monkeypatch):
    target = tmp_path / "weights.pt"
    target.write_bytes(b"x")
    assert _resolve(str(target)) == target
    monkeypatch.chdir(tmp_path)
    assert _resolve("weights.pt").resolve() == target


def test_names_under_registered_folders_in_order(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    (second / "clip-vit-large-patch14").mkdir(parents=True)
    (second / "HPS_v2.1_compressed.pt").write_bytes(b"x")
    loading.set_model_dirs([first, second])
    assert loading.model_dirs() == [first, second]
    # a repo-style name is found by its last component, a file by its own name
    assert _resolve("openai/clip-vit-large-patch14") == second / "clip-vit-large-patch14"
    assert _resolve("HPS_v2.1_compressed.pt") == second / "HPS_v2.1_compressed.pt"
    assert _resolve("xswu/HPSv2", filename="HPS_v2.1_compressed.pt") == second / "HPS_v2.1_compressed.pt"
    (first / "HPS_v2.1_compressed.pt").parent.mkdir(parents=True)
    (first / "HPS_v2.1_compressed.pt").write_bytes(b"y")
    assert _resolve("HPS_v2.1_compressed.pt") == first / "HPS_v2.1_compressed.pt"


def test_set_model_dirs_accepts_one_folder_and_returns_copies(tmp_path):
    loading.set_model_dirs(str(tmp_path))
    dirs = loading.model_dirs()
    dirs.append(tmp_path / "other")
    assert loading.model_dirs() == [tmp_path]


def test_hf_cache_snapshot_and_single_file(tmp_path, isolated):
    src = tmp_path / "config.json"
    src.write_text("{}")
    snap = make_hf_cache_repo(isolated, "org/tiny-clip", {"config.json": src, "sub/w.pt": src})
    assert _resolve("org/tiny-clip") == snap
    assert _resolve("org/tiny-clip", filename="sub/w.pt") == snap / "sub" / "w.pt"


def test_known_model_name_maps_to_its_repo_file_in_the_cache(tmp_path, isolated):
    src = tmp_path / "hps.pt"
    src.write_bytes(b"x")
    snap = make_hf_cache_repo(isolated, "xswu/HPSv2", {"HPS_v2.1_compressed.pt": src})
    assert _resolve("HPS_v2.1_compressed.pt") == snap / "HPS_v2.1_compressed.pt"


def test_path_beats_model_folder_beats_cache(tmp_path, isolated, monkeypatch):
    src = tmp_path / "f.json"
    src.write_text("{}")
    make_hf_cache_repo(isolated, "org/tiny-clip", {"config.json": src})
    folder = tmp_path / "models"
    (folder / "tiny-clip").mkdir(parents=True)
    loading.set_model_dirs([folder])
    assert _resolve("org/tiny-clip") == folder / "tiny-clip"
    (tmp_path / "org" / "tiny-clip").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert _resolve("org/tiny-clip").resolve() == tmp_path / "org" / "tiny-clip"


def test_missing_model_error_names_expectation_every_folder_and_source(tmp_path, isolated):
    dirs = [tmp_path / "m1", tmp_path / "m2"]
    loading.set_model_dirs(dirs)
    with pytest.raises(VerifierError) as err:
        _resolve("org/tiny-clip")
    msg = str(err.value)
    for part in ("clip_score", EXPECT, str(dirs[0]), str(dirs[1]), str(isolated), "org/tiny-clip", SOURCE,
                 "allow_download"):
        assert part in msg, part


def test_absolute_missing_path_is_not_looked_up_as_a_repo(tmp_path):
    loading.set_model_dirs([tmp_path / "m"])
    with pytest.raises(VerifierError) as err:
        _resolve(str(tmp_path / "nowhere" / "w.pt"))
    msg = str(err.value)
    assert "Hugging Face cache" not in msg and str(tmp_path / "m") in msg and "full path" in msg


def test_download_is_opt_in_and_its_failure_is_a_verifier_error(tmp_path):
    with pytest.raises(VerifierError) as err:
        _resolve("org/tiny-clip", allow_download=False)
    assert "cannot find" in str(err.value)
    with pytest.raises(VerifierError) as err:  # offline hub: the download is attempted and fails
        _resolve("org/tiny-clip", allow_download=True)
    assert "downloading repo org/tiny-clip failed" in str(err.value) and SOURCE in str(err.value)


def test_download_targets(tmp_path, monkeypatch):
    """A download goes into the first model folder with the known file patterns (no multi-GB extra formats)."""
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, **kw: calls.append((repo, kw)) or str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo, f, **kw: calls.append((repo, f, kw)) or str(tmp_path / f))
    loading.set_model_dirs([tmp_path / "models"])
    loading._download("openai/clip-vit-large-patch14", None, "clip_score")
    repo, kw = calls[-1]
    assert kw["local_dir"] == tmp_path / "models" / "clip-vit-large-patch14"
    assert "model.safetensors" in kw["allow_patterns"] and not any(p.endswith(".h5") for p in kw["allow_patterns"])
    loading._download("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", None, "pickscore_processor")
    assert "model.safetensors" not in calls[-1][1]["allow_patterns"]
    for repo, kind in (("openai/clip-vit-large-patch14", "clip_score"), ("facebook/dinov2-small", "self_similarity"),
                       ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "pickscore_processor")):
        loading._download(repo, None, kind)  # a repo re-saved by transformers 5 has processor_config.json
        assert any(fnmatch.fnmatch("processor_config.json", p) for p in calls[-1][1]["allow_patterns"]), repo
    assert loading._download("xswu/HPSv2", "HPS_v2.1_compressed.pt", "hpsv2") == tmp_path / "HPS_v2.1_compressed.pt"
    assert calls[-1][2]["local_dir"] == tmp_path / "models"


@pytest.mark.parametrize("load, kind", [(clip.load_clip_score, "clip_score"), (aesthetic.load_aesthetic, "aesthetic"),
                                        (preference.load_pickscore, "pickscore"), (preference.load_hpsv2, "hpsv2"),
                                        (clip.load_clip_zero_shot, "clip_zero_shot")])
def test_every_default_model_is_a_known_model(load, kind):
    default = inspect.signature(load).parameters["model"].default
    entry = loading.find_known(default, kind)
    assert entry is not None and entry in loading.known_models(kind)
    assert entry.source.startswith("https://") and entry.size and entry.license and entry.files


def test_known_models_are_unique_per_kind():
    keys = [(m.name, m.verifier) for m in loading.KNOWN_MODELS]
    assert len(keys) == len(set(keys))
