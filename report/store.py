"""TensorStore: what a search keeps of every final candidate (its latent, so any candidate can be picked and decoded
later; its thumbnail), in host RAM up to a byte budget and beyond it in an unlinked temporary file, so a search over
thousands of candidates keeps RAM bounded whatever the resolution (a pixel-space model's latent is a full image)."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator, Mapping
from typing import Optional

import torch


class TensorStore(Mapping):
    """id -> latent (CPU tensor), bit-exact in any dtype; the first `ram_budget` bytes in RAM, the rest on disk in
    `spill_dir` (the system's temp folder when None), read back on access. The file has no name on POSIX and is
    deleted when the store is closed or collected."""

    def __init__(self, ram_budget: int, spill_dir: Optional[str] = None):
        self.ram_budget = int(ram_budget)
        self.spill_dir = spill_dir
        self._ram: dict = {}
        self._ram_bytes = 0
        self._disk: dict = {}  # id -> (offset, nbytes, shape, dtype)
        self._file = None
        self._end = 0
        self._lock = threading.Lock()

    def add(self, cid: int, latent: torch.Tensor) -> None:
        """Keep a copy of `latent` (any device) under `cid`; a second add under the same id replaces it."""
        self._forget(cid)
        latent = latent.detach().to("cpu").contiguous()
        nbytes = latent.numel() * latent.element_size()
        if self._ram_bytes + nbytes <= self.ram_budget:
            self._ram[cid] = latent.clone()
            self._ram_bytes += nbytes
            return
        with self._lock:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="noise_search_latents_", dir=self.spill_dir)
            self._file.seek(self._end)
            self._file.write(latent.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._disk[cid] = (self._end, nbytes, tuple(latent.shape), latent.dtype)
            self._end += nbytes

    def discard(self, cid: int) -> None:
        """Drop `cid` (its RAM is freed at once; spilled bytes stay in the file until the store is closed)."""
        self._forget(cid)

    def _forget(self, cid: int) -> None:
        if cid in self._ram:
            latent = self._ram.pop(cid)
            self._ram_bytes -= latent.numel() * latent.element_size()
        self._disk.pop(cid, None)

    def __getitem__(self, cid: int) -> torch.Tensor:
        if cid in self._ram:
            return self._ram[cid]
        offset, nbytes, shape, dtype = self._disk[cid]
        with self._lock:
            self._file.seek(offset)
            data = bytearray(self._file.read(nbytes))
        return torch.frombuffer(data, dtype=torch.uint8).view(dtype).reshape(shape)

    def __contains__(self, cid: object) -> bool:
        return cid in self._ram or cid in self._disk

    def __iter__(self) -> Iterator[int]:
        yield from self._ram
        yield from self._disk

    def __len__(self) -> int:
        return len(self._ram) + len(self._disk)

    @property
    def spilled(self) -> tuple[int, int]:
        """(latents, bytes) kept on disk."""
        return len(self._disk), self._end

    def close(self) -> None:
        """Delete the spill file; latents kept in RAM stay readable."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._disk.clear()
            self._end = 0


def spill_note(what: str, stores: list, ram_budget: int) -> Optional[str]:
    """What the report says when some of `what` (the stores' contents, e.g. "final latents") went to disk; None
    when all stayed in RAM."""
    count = sum(s.spilled[0] for s in stores)
    if not count:
        return None
    size = sum(s.spilled[1] for s in stores)
    where = stores[0].spill_dir or tempfile.gettempdir()
    return (f"{count} of {sum(len(s) for s in stores)} {what} ({size / 2**20:.0f} MiB) are kept in a temporary file in "
            f"{where}, beyond the {ram_budget / 2**20:.0f} MiB of RAM for them; each is read back when needed")
