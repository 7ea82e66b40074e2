"""TensorStore: tensors in RAM up to a byte budget, the rest in a temporary file, each read back bit-exact."""

import os
import sys

import pytest
import torch

from noise_search.report import SearchReport
from noise_search.report.store import TensorStore, spill_note


def latents(n, dtype=torch.float32, shape=(4, 8, 8), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen).to(dtype) for _ in range(n)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_latents_beyond_the_budget_go_to_disk_and_read_back_bit_exact(tmp_path, dtype):
    rows = latents(10, dtype)
    each = rows[0].numel() * rows[0].element_size()
    store = TensorStore(ram_budget=3 * each, spill_dir=str(tmp_path))
    for i, row in enumerate(rows):
        store.add(100 + i, row)
    assert store.spilled == (7, 7 * each)
    assert len(store) == 10 and sorted(store) == list(range(100, 110))
    for i, row in enumerate(rows):
        back = store[100 + i]
        assert back.dtype == dtype and back.shape == row.shape
        assert torch.equal(back.view(torch.uint8), row.view(torch.uint8))
    assert 99 not in store and 100 in store and 109 in store
    with pytest.raises(KeyError):
        store[99]


def test_a_kept_row_does_not_hold_its_batch_and_changes_to_the_source_do_not_leak(tmp_path):
    batch = torch.zeros(8, 4, 64, 64)
    store = TensorStore(ram_budget=1 << 20, spill_dir=str(tmp_path))
    store.add(0, batch[0])
    batch[0] += 1
    assert store[0].abs().sum() == 0
    assert store[0].untyped_storage().nbytes() == 4 * 64 * 64 * 4


def test_ram_stays_within_the_budget_whatever_the_latent_size(tmp_path):
    store = TensorStore(ram_budget=5 * 2**20, spill_dir=str(tmp_path))
    for i, row in enumerate(latents(12, shape=(3, 512, 512))):  # 3 MiB each, a pixel-space model's latent
        store.add(i, row)
    in_ram = sum(t.numel() * t.element_size() for t in store._ram.values())
    assert in_ram <= 5 * 2**20 and store.spilled[0] == 11


def test_the_spill_file_leaves_nothing_behind(tmp_path):
    store = TensorStore(ram_budget=0, spill_dir=str(tmp_path))
    store.add(1, torch.ones(3, 4))
    if sys.platform != "win32":  # POSIX: unlinked from the start, the folder never shows it
        assert os.listdir(tmp_path) == []
    assert torch.equal(store[1], torch.ones(3, 4))
    store.close()
    assert os.listdir(tmp_path) == [] and 1 not in store


def test_adding_an_id_again_replaces_it(tmp_path):
    store = TensorStore(ram_budget=0, spill_dir=str(tmp_path))
    store.add(5, torch.zeros(2))
    store.add(5, torch.ones(2))
    assert len(store) == 1 and torch.equal(store[5], torch.ones(2))


def test_the_note_counts_what_went_to_disk_and_says_where(tmp_path):
    each = 4 * 8 * 8 * 4
    stores = [TensorStore(ram_budget=2 * each, spill_dir=str(tmp_path)) for _ in range(2)]
    for store in stores:
        for i, row in enumerate(latents(5)):
            store.add(i, row)
    note = spill_note("final latents", stores, 4 * each)
    assert note.startswith("6 of 10 final latents (0 MiB)") and str(tmp_path) in note
    assert spill_note("thumbnails", [TensorStore(0)], 1 << 30) is None


def test_a_report_decodes_a_spilled_candidate_on_pick(tmp_path):
    store = TensorStore(ram_budget=0, spill_dir=str(tmp_path))
    rows = latents(3)
    for i, row in enumerate(rows):
        store.add(i, row)
    asked = []

    def decode(x, ids):  # the VAE's decode names the candidates in its NaN errors
        asked.append(ids)
        return x.sum(dim=1, keepdim=True).movedim(1, -1)

    report = SearchReport(results=[None], verifier="v", images=[{}], latents=[store], decode=decode)
    assert torch.equal(report.image(0, 2), rows[2].sum(dim=0, keepdim=True).movedim(0, -1))
    assert asked == [[2]]
    with pytest.raises(ValueError, match=r"no latent for candidate 7 of batch item 0; stored ids: \[0, 1, 2\]"):
        report.image(0, 7)
