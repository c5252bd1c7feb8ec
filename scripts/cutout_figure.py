"""Stamps as the model sees them: real Rubin alerts beside simulated ones and the four artefact kinds.

Writes ``docs/img/cutouts_examples.png``: one row per alert, the three channels (difference,
science, template) in the noise units of the image tokens (:mod:`broker.cutouts`), on one colour
scale. Real stamps come from tests/data/real_alerts (Rubin alert pipelines, via Fink's public test
data; see its README); simulated ones from :func:`broker.sim.cutouts.render`.

Usage::

    python scripts/cutout_figure.py [--out docs/img/cutouts_examples.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from broker.cutouts import stamps_to_tokens
from broker.decode import BatchDecoder
from broker.schemas import SchemaStore
from broker.sim.cutouts import BOGUS_KINDS, Scene, render
from broker.tokens import IMG_CHANNELS

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "data" / "real_alerts" / "wire"


def real_rows(n: int = 2) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` real alerts of each schema version, as image tokens."""
    rows = []
    for prefix in ("hostless", "or4"):
        msgs = [p.read_bytes() for p in sorted(REAL.glob(f"{prefix}_*.bin"))[:n]]
        res = BatchDecoder(SchemaStore(), cutouts=True).decode(msgs)
        assert res.batch.images is not None
        rows += [(f"Rubin {prefix} {sid}", img) for sid, img in
                 zip(res.batch.table["diaSourceId"].tolist(), res.batch.images.img, strict=True)]
    return rows


def sim_rows(seed: int = 3) -> list[tuple[str, np.ndarray]]:
    """A hosted real transient, a variable star, and one of each artefact kind."""
    rng = np.random.default_rng(seed)
    kinds = list(range(len(BOGUS_KINDS)))
    n = len(kinds) + 1
    scene = Scene(flux=np.full(n, 2000.0), flux_err=np.full(n, 200.0),
                  host_flux=np.r_[20000.0, np.nan, np.full(n - 2, 20000.0)], host_sep=np.full(n, 0.8),
                  host_radius=np.full(n, 1.0), star_flux=np.r_[0.0, 20000.0, np.zeros(n - 2)],
                  bogus=np.r_[0, 0, kinds[1:]])
    img = stamps_to_tokens(render(scene, rng))
    names = ["sim: transient on a host", "sim: variable star", *(f"sim: {k}" for k in BOGUS_KINDS[1:])]
    return list(zip(names, img, strict=True))


def main(argv: list[str] | None = None) -> int:
    """Draw the figure; returns an exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "cutouts_examples.png"))
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = real_rows() + sim_rows()
    fig, axes = plt.subplots(len(rows), 3, figsize=(6.0, 2.0 * len(rows)))
    for r, (name, img) in enumerate(rows):
        for c, chan in enumerate(IMG_CHANNELS):
            ax = axes[r, c]
            ax.imshow(img[c], origin="lower", cmap="magma", vmin=-2, vmax=6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(chan, fontsize=9)
        axes[r, 0].set_ylabel(name, fontsize=7)
    fig.suptitle("image tokens: arcsinh(pixel / 3 sigma)", fontsize=9)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out} ({len(rows)} alerts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
