"""``alertbroker graft``: copy the parts that do not read the encoder from one checkpoint to another.

Why: the served photo-z is the distilled host-only student (:mod:`models.photoz_student`) times the
alert-selection prior (:mod:`models.photoz_prior`), and for some classes the light curve's
likelihood (:mod:`models.photoz_lc`). None reads the encoder: the student's inputs are the host's
magnitude tokens, the prior's the redshift, the likelihood's the summary-feature tokens (and it
serves classes by index, so it moves only between checkpoints of one taxonomy). A classifier trained without the joint
photo-z loss (``alertbroker train --photoz none``) has no photo-z teacher to distil, but it can serve
the student and prior of another checkpoint unchanged, bit for bit, with the same photo-z figures.
Parts that read the encoder's embedding (forecast, anomaly, neighbours, physics) cannot move this
way: they are refitted on the new encoder (``alertbroker train-forecast --init``, ...).

Run (the shipped model's photo-z onto a new classifier)::

    alertbroker graft --from models/weights/default.pt --into new.pt --out new_pz.pt

The output is ``--into`` with the parts' weights, their config entries and their ``train`` records
taken from ``--from``; every other weight is checked bit-identical to ``--into``'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from models.checkpoint import load_checkpoint, report_part, save_part
from models.model import MultimodalModel

#: Parts that may be grafted: state-dict prefix -> the ModelConfig fields that size it.
GRAFTABLE: dict[str, tuple[str, ...]] = {"photoz_student.": ("photoz_student",), "photoz_prior.": (),
                                         "photoz_lc.": ("photoz_lc", "photoz_lc_members", "photoz_lc_join")}


def graft(source: MultimodalModel, target: MultimodalModel, parts: tuple[str, ...],
          join: bool | None = None) -> MultimodalModel:
    """``target`` with the weights under ``parts`` (prefixes of :data:`GRAFTABLE`) from ``source``.

    ``join`` (with the ``photoz_lc.`` part) sets whether the light curve's likelihood joins the served
    photo-z (``cfg.photoz_lc_join``; :mod:`models.photoz_lc`); None keeps ``source``'s. Why: whether
    it joins is a serving decision, judged on served alerts after the networks are trained.

    Raises
    ------
    ValueError
        A part that reads the encoder, or mixtures of different sizes (the student's output is
        summarised with the target's ``n_components``).
    """
    bad = [p for p in parts if p not in GRAFTABLE]
    if bad:
        raise ValueError(f"cannot graft {bad}: only parts that do not read the encoder ({sorted(GRAFTABLE)})")
    if source.cfg.n_components != target.cfg.n_components:
        raise ValueError(f"photo-z mixtures differ: {source.cfg.n_components} against "
                         f"{target.cfg.n_components} components")
    if "photoz_lc." in parts and source.photoz_lc is not None and source.cfg.n_classes != target.cfg.n_classes:
        raise ValueError("the light-curve photo-z serves classes by index: the taxonomies differ")
    sized = {f: getattr(source.cfg, f) for p in parts for f in GRAFTABLE[p]}
    if join is not None:
        if "photoz_lc." not in parts or source.photoz_lc is None:
            raise ValueError("join applies to the light-curve photo-z: graft the photoz_lc part of a checkpoint "
                             "that has one")
        sized["photoz_lc_join"] = join
    new = MultimodalModel(dataclasses.replace(target.cfg, **sized))
    src = source.state_dict()
    new.load_state_dict({**{k: v for k, v in target.state_dict().items() if not k.startswith(parts)},
                         **{k: v for k, v in src.items() if k.startswith(parts)}})
    return new.eval()


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``alertbroker graft``."""
    ap = argparse.ArgumentParser(prog="alertbroker graft", description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="source", required=True, help="checkpoint whose parts are copied")
    ap.add_argument("--into", required=True, help="checkpoint that receives them")
    ap.add_argument("--out", required=True, type=Path, help="checkpoint to write")
    ap.add_argument("--part", action="append", choices=[p.rstrip(".") for p in GRAFTABLE],
                    help="part to copy (repeatable; default: all of them)")
    ap.add_argument("--join", choices=("on", "off"),
                    help="whether the light curve's photo-z joins the served photo-z (default: as --from)")
    return ap


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker graft``; exit status 1 if any other weight moved."""
    a = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    parts = tuple(f"{p}." for p in a.part) if a.part else tuple(GRAFTABLE)
    source, smeta = load_checkpoint(a.source, any_features=True)  # only its photo-z parts are taken
    target, tmeta = load_checkpoint(a.into)
    if source.photoz_lc is not None and "photoz_lc." in parts and smeta["taxonomy"] != tmeta["taxonomy"]:
        raise SystemExit("the light-curve photo-z serves classes by index: --from and --into taxonomies differ")
    try:
        new = graft(source, target, parts, None if a.join is None else a.join == "on")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    names = [p.rstrip(".") for p in parts]
    train = {**tmeta.get("train", {}), **{n: smeta["train"][n] for n in names if n in smeta.get("train", {})},
             "graft": {"from": str(a.source), "parts": names, **({"join": a.join} if a.join else {})}}
    same = save_part(a.out, new, tmeta, train, target.state_dict(), parts)
    print(f"grafted {', '.join(names)} from {a.source} into {a.into}")
    return report_part(a.out, {"parts": len(parts)}, same, t0)


if __name__ == "__main__":
    raise SystemExit(cli_main())
