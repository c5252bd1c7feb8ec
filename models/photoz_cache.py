"""Served photo-z from host magnitudes, computed once per distinct host (an LRU cache).

Why: the photo-z is served from the host tokens alone (``MultimodalModel.photoz_from_host``),
which costs a second encoder pass, about 40 % of the main one. It depends only on the host's
magnitude tokens, and every alert of an object is matched to the same host, so in a stream most
alerts repeat a host already scored: their photo-z is looked up instead of recomputed. Alerts
with the same host inside one batch are scored once too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch

from broker.tokens import HOST_KIND_MAG


class HostPhotozCache:
    """Photo-z summaries (n, ``width``) keyed by an alert's host magnitude tokens.

    Parameters
    ----------
    compute : callable
        ``(host (m, H, 4) tensor, host_mask (m, H) tensor) -> (m, width) tensor``: the 8 summary
        columns, then (a model with a light-curve photo-z) the host mixture they summarise.
    device : torch.device
        Where ``compute`` runs.
    capacity : int
        Hosts kept (~200 bytes each at width 8: 100,000 hosts are ~20 MB; ~300 at width 23).
    chunk : int
        Hosts per ``compute`` call.
    width : int
        Columns ``compute`` returns.
    """

    def __init__(self, compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device,
                 capacity: int = 100_000, chunk: int = 1024, width: int = 8) -> None:  # fmt: skip
        self.compute, self.device, self.capacity, self.chunk = compute, device, capacity, chunk
        self.width = width
        self._lru: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def clear(self) -> None:
        """Forget every host (benchmarks use it to time the worst case)."""
        self._lru.clear()

    @staticmethod
    def keys(host: np.ndarray, host_mask: np.ndarray) -> list[bytes]:
        """One key per alert: its magnitude tokens (others zeroed) and which slots are real."""
        mags = host_mask & (host[..., 0] == HOST_KIND_MAG)
        vals = np.where(mags[..., None], host, 0.0).astype(np.float32)
        return [v.tobytes() + m.tobytes() for v, m in zip(vals, mags, strict=True)]

    def __call__(self, host: np.ndarray, host_mask: np.ndarray) -> np.ndarray:
        """Photo-z (n, ``width``) float32 for ``host`` (n, H, 4) and ``host_mask`` (n, H)."""
        keys = self.keys(host, host_mask)
        out = np.empty((len(keys), self.width), np.float32)
        todo: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            hit = self._lru.get(key)
            if hit is None:
                todo.setdefault(key, []).append(i)
            else:
                self._lru.move_to_end(key)
                out[i] = hit
                self.hits += 1
        first = [rows[0] for rows in todo.values()]
        for s in range(0, len(first), self.chunk):
            rows = first[s : s + self.chunk]
            h = torch.from_numpy(np.ascontiguousarray(host[rows])).to(self.device)
            m = torch.from_numpy(np.ascontiguousarray(host_mask[rows])).to(self.device)
            with torch.no_grad():
                z = self.compute(h, m).float().cpu().numpy()
            for r, zr in zip(rows, z, strict=True):
                key = keys[r]
                for i in todo[key]:
                    out[i] = zr
                self.misses += len(todo[key])
                self._lru[key] = zr
        while len(self._lru) > self.capacity:
            self._lru.popitem(last=False)
        return out
