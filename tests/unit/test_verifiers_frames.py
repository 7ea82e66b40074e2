"""Videos through image verifiers: which frames are scored, how a video's score is made, its thumbnail strip and
the IMAGE batch a video search outputs."""

import pytest
import torch

from noise_search.report.report import image_batch, make_thumbs, video_strip
from noise_search.verifiers.frames import aggregate_frames, frame_indices, select_frames


@pytest.mark.parametrize("total,count,expected", [
    (81, 3, [0, 40, 80]), (5, 3, [0, 2, 4]), (9, 4, [0, 3, 5, 8]), (5, 1, [2]), (4, 8, [0, 1, 2, 3]), (1, 4, [0]),
])
def test_frames_are_spread_from_the_first_to_the_last(total, count, expected):
    assert frame_indices(total, count) == expected


def test_no_frames_is_an_error():
    with pytest.raises(ValueError, match="at least one frame"):
        frame_indices(0, 3)


def test_selected_frames_are_video_major_and_aggregate_back_per_video():
    videos = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1, 1, 1).expand(2, 5, 2, 2, 3)
    frames, indices = select_frames(videos, 3)
    assert indices == [0, 2, 4] and frames.shape == (6, 2, 2, 3)
    per_frame = frames.mean(dim=(1, 2, 3))
    assert per_frame.tolist() == [0, 2, 4, 5, 7, 9]
    assert aggregate_frames(per_frame, 2, "mean").tolist() == [2, 7]
    assert aggregate_frames(per_frame, 2, "min").tolist() == [0, 5]
    with pytest.raises(ValueError, match="mean, min"):
        aggregate_frames(per_frame, 2, "max")


def test_a_video_thumbnail_is_a_strip_of_four_frames():
    videos = torch.rand(3, 9, 16, 24, 3)
    strip = video_strip(videos)
    assert strip.shape == (3, 16, 4 * 24, 3)
    assert torch.equal(strip[1, :, 24:48], videos[1, 3])  # frames 0, 3, 5, 8: the second is frame 3
    assert make_thumbs(videos).shape == (3, 16, 96, 3)


def test_a_video_search_outputs_its_frames_one_after_another():
    images = [torch.rand(8, 8, 3), torch.rand(8, 8, 3)]
    assert torch.equal(image_batch(images), torch.stack(images))
    videos = [torch.rand(5, 8, 8, 3), torch.rand(5, 8, 8, 3)]
    assert torch.equal(image_batch(videos), torch.cat(videos)) and image_batch(videos).shape == (10, 8, 8, 3)
