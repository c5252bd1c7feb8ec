"""``alertbroker bench dedup``: memory per million ids of the ``--dedup`` window, and its cost per alert.

The window (:class:`consumers.dedup_store.IdWindow`, LMDB) is filled with ``--ids`` random 63-bit ids
(Rubin's ids are 64-bit and not dense), then batches of ``--batch`` outputs, ``--repeat`` of them
repeats, go through :class:`consumers.dedup.Deduplicator` as in a run: ``drop_repeats`` then
``delivered`` (one write transaction per batch, with ``fsync`` as in production, and without).
A second pass runs with the window full, so that every batch also evicts as many ids as it adds.

Memory: the size of the LMDB file in use (it is memory-mapped; pages live in the page cache, not
on the heap) and the growth of the process's resident memory once every page was read.
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path

from broker.records import EnrichResult, Output
from broker.settings import Settings
from consumers.dedup import Deduplicator
from consumers.dedup_store import IdWindow
from consumers.messages import InMessage

MIB = 1024 * 1024


class _Done:
    """A checkpoint that does nothing (only the dedup's own cost is measured)."""

    def begin_batch(self) -> None:
        """Nothing."""

    def end_batch(self, messages: list[InMessage]) -> str:
        """Every batch waits for its deliveries."""
        return "pending"

    def delivered(self, messages: list[InMessage]) -> None:
        """Nothing."""

    def tick(self) -> None:
        """Nothing."""


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / MIB


def _per_alert_us(window: IdWindow, old: list[int], rng: random.Random, batches: int, batch: int,
                  repeat: float) -> float:  # fmt: skip
    """µs per alert of drop_repeats + delivered over ``batches`` batches."""
    d = Deduplicator(_Done(), window)  # type: ignore[arg-type]
    res = []
    for _ in range(batches):
        ids = [rng.choice(old) if rng.random() < repeat else rng.getrandbits(63) for _ in range(batch)]
        res.append(EnrichResult([Output(k, b"", b"", None, i) for k, i in enumerate(ids)]))
    t = time.perf_counter()
    for r in res:
        d.drop_repeats(r)
        d.end_batch([])
        d.delivered([])
    return (time.perf_counter() - t) / (batches * batch) * 1e6


def main(argv: list[str] | None = None) -> int:
    """Fill a window, measure its memory and the cost per alert; print a last ``key=value`` line."""
    ap = argparse.ArgumentParser(prog="alertbroker bench dedup", description=__doc__)
    ap.add_argument("--ids", type=int, default=1_000_000, help="ids in the window before timing")
    ap.add_argument("--batch", type=int, default=Settings.model_fields["batch_size"].default)
    ap.add_argument("--batches", type=int, default=100, help="timed batches per pass")
    ap.add_argument("--repeat", type=float, default=0.1, help="share of repeats in a batch")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes (the best is kept)")
    ap.add_argument("--dir", help="where to put the window (default: a temporary directory)")
    args = ap.parse_args(argv)
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        window = IdWindow(Path(tmp) / "w", window=Settings.model_fields["dedup_window"].default, sync=False)
        t = time.perf_counter()
        old: list[int] = []
        while len(old) < args.ids:
            ids = [rng.getrandbits(63) for _ in range(min(10_000, args.ids - len(old)))]
            window.add(ids)
            old += ids
        fill_s = time.perf_counter() - t
        window.close()  # unmaps every page: what the reopened window reads back is its resident memory
        window = IdWindow(Path(tmp) / "w", window=Settings.model_fields["dedup_window"].default, sync=False)
        rss0 = _rss_mib()
        for k in range(0, len(old), 10_000):
            window.known(old[k : k + 10_000])
        rss = (_rss_mib() - rss0) * 1e6 / len(window)
        mib = window.file_bytes() / MIB * 1e6 / len(window)
        tree = window.tree_bytes() / MIB * 1e6 / len(window)
        print(f"window: {len(window)} ids, filled in {fill_s:.1f} s ({fill_s / len(window) * 1e6:.2f} µs per id, "
              f"batches of 10k, no fsync)")  # fmt: skip
        print(f"memory per million ids: {tree:.1f} MiB in the two trees, {mib:.1f} MiB of LMDB file (free pages "
              f"included; memory-mapped), resident growth {rss:.1f} MiB once every id was looked up (page cache)")
        window.close()
        results: dict[str, list[float]] = {"fsync": [], "nosync": [], "evict": []}
        for _ in range(args.repeats):  # best of: the machine is shared and noisy
            for name, sync, size in (("fsync", True, None), ("nosync", False, None), ("evict", True, len(old))):
                w = IdWindow(Path(tmp) / "w", window=size or Settings.model_fields["dedup_window"].default, sync=sync)
                results[name].append(_per_alert_us(w, old, rng, args.batches, args.batch, args.repeat))
                w.close()  # "evict": the window is full, every new id evicts the oldest
        best = {k: min(v) for k, v in results.items()}
    print(f"cost per alert, batches of {args.batch} with {args.repeat:.0%} repeats (drop_repeats + record): "
          f"{best['fsync']:.2f} µs with fsync per batch, {best['nosync']:.2f} µs without, "
          f"{best['evict']:.2f} µs with fsync when the window is full (eviction); best of {args.repeats}")  # fmt: skip
    print(f"dedup_tree_mib_per_million_ids={tree:.1f} dedup_file_mib_per_million_ids={mib:.1f} "
          f"dedup_rss_mib_per_million_ids={rss:.1f} dedup_us_per_alert={best['fsync']:.2f} "
          f"dedup_us_per_alert_nosync={best['nosync']:.2f} dedup_us_per_alert_evicting={best['evict']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
