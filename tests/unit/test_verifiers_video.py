"""Video verifiers: temporal consistency on a tiny DINOv2 saved in its real format, motion, image verifiers scoring a
clip through its frames, and an ensemble that mixes both."""

import pytest
import torch

from noise_search.tests.helpers.tiny_models import make_hf_dinov2
from noise_search.verifiers import Ensemble, VerifierError, describe, load_verifier
from noise_search.verifiers.base import Verifier


class Brightness(Verifier):
    name = "brightness"

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Linear(1, 1)

    def _score(self, images, prompt, references):
        return images.float().mean(dim=(1, 2, 3))


def clip_of(values, size=8):
    """A clip whose frame t is the constant values[t] everywhere: `[1, T, size, size, 3]`."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1, 1).expand(1, len(values), size, size, 3)


@pytest.fixture(scope="module")
def dinov2(tmp_path_factory):
    return make_hf_dinov2(tmp_path_factory.mktemp("dino") / "dinov2", seed=5)


def test_motion_is_the_mean_change_between_adjacent_frames():
    motion = load_verifier("motion")
    clips = torch.cat([clip_of([0.5] * 4), clip_of([0.0, 0.1, 0.3, 0.6])])
    assert motion.score_video(clips).tolist() == pytest.approx([0.0, 0.2])
    assert motion.score_video(clip_of([0.2, 0.8, 0.2, 0.8], size=200)).tolist() == pytest.approx([0.6])  # resized
    assert describe("motion")["model_free"] and describe("motion")["video"]


def test_a_video_verifier_refuses_images_and_one_frame_clips():
    motion = load_verifier("motion")
    with pytest.raises(VerifierError, match="scores videos, not single images"):
        motion.score(torch.rand(2, 8, 8, 3))
    with pytest.raises(VerifierError, match="at least 2 frames"):
        motion.score_video(torch.rand(2, 1, 8, 8, 3))
    with pytest.raises(VerifierError, match="option 'size' must be a positive integer"):
        load_verifier("motion", size=0)


def test_temporal_consistency_follows_vbench_subject_consistency(dinov2):
    verifier = load_verifier("temporal_consistency", str(dinov2), batch_size=2)
    assert verifier.backbone == "dinov2" and verifier.video
    g = torch.Generator().manual_seed(3)
    still = torch.rand(1, 1, 56, 56, 3, generator=g).expand(1, 5, 56, 56, 3)
    moving = torch.rand(1, 5, 56, 56, 3, generator=g)
    scores = verifier.score_video(torch.cat([still, moving]))
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    f = verifier.model.encode_images(moving[0])
    expected = (((f[0] * f[1:]).sum(-1) + (f[:-1] * f[1:]).sum(-1)) / 2).mean()
    assert scores[1] == pytest.approx(float(expected), abs=1e-5) and scores[1] < scores[0]


def test_an_image_verifier_scores_a_clip_on_frames_spread_over_it():
    clips = torch.cat([clip_of([0.0, 0.1, 0.2, 0.3, 0.4]), clip_of([0.9, 0.1, 0.6, 0.7, 0.3])])
    v = Brightness()
    assert v.score_video(clips, frames=3).tolist() == pytest.approx([0.2, 0.6])
    assert v.frame_indices == [0, 2, 4]
    assert torch.allclose(v.frame_scores["brightness"], torch.tensor([[0.0, 0.2, 0.4], [0.9, 0.6, 0.3]]))
    assert v.score_video(clips, frames=3, how="min").tolist() == pytest.approx([0.0, 0.3])


def test_an_ensemble_gives_each_member_the_clip_its_own_way():
    clips = torch.cat([clip_of([0.5] * 5), clip_of([0.1, 0.3, 0.1, 0.3, 0.1]), clip_of([0.2, 0.2, 0.2, 0.2, 0.9])])
    ens = Ensemble([Brightness(), load_verifier("motion")])
    assert ens.video
    scores = ens.score_video(clips, frames=2)
    members = ens.member_scores()
    assert members["brightness"].tolist() == pytest.approx([0.5, 0.1, 0.55])  # frames 0 and 4
    assert members["motion"].tolist() == pytest.approx([0.0, 0.2, 0.175])  # every adjacent pair
    assert list(ens.frame_scores) == ["brightness"] and ens.frame_indices == [0, 4]
    assert torch.equal(scores, ens.aggregate(members))
