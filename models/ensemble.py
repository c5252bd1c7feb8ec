"""A served seed ensemble: one primary checkpoint and members whose class probabilities it averages.

Why: single trainings of the shipping recipe differ by seed as much as recipes differ from each other
(docs/models.md, "Model choice"): on the selection set ``sel23`` each of three retrained seeds tied
the shipped model within ±0.03 macro-F1, with a different class (SN Ibc, TDE, SN Ia) won or lost
each time. The mean of their calibrated probabilities keeps what they agree on: on every set
measured it scored above the shipped model alone (section "A seed ensemble" in docs/models.md).
It costs more passes per alert, so the shipped default stays one checkpoint and the ensembles are
chosen by name (``--model cascade``, ``--model ensemble``: :data:`models.predictor.SHIPPED_MODELS`).

What the ensemble changes is the **class probabilities only**: each member's calibrated
probabilities (temperature and luminosity prior, reading the primary's served photo-z) are averaged
with equal weights. With ``consult_below`` set, the members are consulted only for alerts whose
top probability from the primary is below it (a cascade): the primary's confident answers, right
~99 % of the time, stand, and the members' cost is paid for the uncertain third of the alerts.
The photo-z, anomaly score, embedding, forecast, real/bogus and attribution are the primary's
(measured: the members' mean anomaly score found the held-out classes no better).
The members must therefore featurize and serve the photo-z exactly as the primary does; loading
checks it and refuses anything else.

The ensemble is a small JSON manifest beside the checkpoints (paths relative to it)::

    {"format": "alertbroker-ensemble/1",
     "primary": {"file": "default.pt", "sha256": "..."},
     "members": [{"file": "members/simrot7_seed0.pt", "sha256": "..."}, ...],
     "consult_below": 0.9,
     "note": "how the members were trained"}

Write one with ``python -m models.ensemble --primary P.pt --member M1.pt [--member M2.pt ...] --out E.json``;
serve it with ``--model E.json`` (``alertbroker run``) or ``--checkpoint E.json`` (``eval served``,
``bench models``).
A checkpoint replaced without rewriting the manifest fails to load (its sha256 differs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from models.checkpoint import load_checkpoint
from models.model import MultimodalModel
from models.predictor import MultimodalPredictor

FORMAT = "alertbroker-ensemble/1"
#: State-dict prefixes of the served photo-z path (host-only student and selection prior): the
#: members' luminosity priors read the primary's photo-z, so these must be the primary's.
PHOTOZ_PREFIXES: tuple[str, ...] = ("photoz_student.", "photoz_prior.")


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(path: str | Path) -> tuple[Path, list[Path], dict[str, Any]]:
    """The primary's and the members' checkpoint paths of a manifest, their hashes checked.

    Raises
    ------
    ValueError
        Not a manifest of this format, no member, a file missing, or a file whose sha256 is not the
        manifest's.
    """
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable ensemble manifest ({err})") from err
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ValueError(f"{path}: not an {FORMAT} manifest")
    entries = [spec.get("primary"), *spec.get("members", [])]
    if len(entries) < 2 or not all(isinstance(e, dict) and "file" in e and "sha256" in e for e in entries):
        raise ValueError(f"{path}: needs a primary and at least one member, each with 'file' and 'sha256'")
    below = spec.get("consult_below")
    if below is not None and not (isinstance(below, int | float) and 0.0 < below <= 1.0):
        raise ValueError(f"{path}: consult_below must be a probability in (0, 1] or null, not {below!r}")
    files = []
    for entry in entries:
        f = path.parent / entry["file"]
        if not f.is_file():
            raise ValueError(f"{path}: checkpoint {entry['file']} not found")
        if (got := sha256(f)) != entry["sha256"]:
            raise ValueError(f"{path}: {entry['file']} has sha256 {got[:12]}…, the manifest {entry['sha256'][:12]}…: "
                             "the checkpoint was replaced; rewrite the manifest (python -m models.ensemble)")
        files.append(f)
    return files[0], files[1:], spec


def check_members(primary: MultimodalModel, meta: dict[str, Any],
                  members: list[tuple[MultimodalModel, dict[str, Any]]]) -> None:
    """Refuse members that would not serve the primary's alerts the same way.

    Raises
    ------
    ValueError
        A member with another taxonomy, featurizer settings, summary-feature list, image input, use
        of the photo-z or served photo-z path.
    """
    own = primary.state_dict()
    for i, (m, mm) in enumerate(members, 1):
        what = {"taxonomy": (mm["taxonomy"], meta["taxonomy"]),
                "featurizer settings": (m.cfg.features, primary.cfg.features),
                "summary features": (m.cfg.encoder.feature_names, primary.cfg.encoder.feature_names),
                "image input": (m.cfg.encoder.images, primary.cfg.encoder.images),
                "use of the photo-z (prior, physics)": (m.reads_host_z, primary.reads_host_z)}  # fmt: skip
        for name, (theirs, ours) in what.items():
            if theirs != ours:
                raise ValueError(f"ensemble member {i}: its {name} differ from the primary's")
        sd = m.state_dict()
        for k in (k for k in own if k.startswith(PHOTOZ_PREFIXES)):
            if k not in sd or not torch.equal(sd[k], own[k]):
                raise ValueError(f"ensemble member {i}: its served photo-z ({k}) is not the primary's; graft it "
                                 "(alertbroker graft --from PRIMARY --into MEMBER)")


def load_ensemble(path: str | Path, device: str = "cpu", **kw: Any) -> MultimodalPredictor:
    """The served predictor of a manifest: the primary's, averaging the members' class probabilities.

    ``kw`` as :class:`~models.predictor.MultimodalPredictor`. The predictor's ``version`` ends with
    ``+ens<N>-<hash>`` (N checkpoints; the first 8 hex digits of the sha256 of their hashes and of
    ``consult_below``), so an enriched alert says which ensemble scored it.
    """
    primary_file, member_files, spec = read_manifest(path)
    primary, meta = load_checkpoint(primary_file, device, any_features=True)
    members = [load_checkpoint(f, device, any_features=True) for f in member_files]
    check_members(primary, meta, members)
    hashes = [spec["primary"]["sha256"], *(e["sha256"] for e in spec["members"])]
    key = "".join(hashes) + f"|{spec.get('consult_below')}"  # the same checkpoints consulted otherwise serve otherwise
    tag = f"ens{len(hashes)}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    meta = {**meta, "ensemble": {"manifest": str(path), "tag": tag, "members": [str(f) for f in member_files],
                                 "note": spec.get("note", "")}}  # fmt: skip
    return MultimodalPredictor(primary, meta, device=device, members=[m for m, _ in members],
                               consult_below=spec.get("consult_below"), **kw)


def write_manifest(out: Path, primary: Path, members: list[Path], note: str = "",
                   consult_below: float | None = None) -> dict[str, Any]:
    """Write a manifest for checkpoints (paths stored relative to ``out``'s folder); returns it."""
    rel = lambda f: os.path.relpath(Path(f).resolve(), out.resolve().parent)  # noqa: E731
    spec = {"format": FORMAT, "primary": {"file": rel(primary), "sha256": sha256(primary)},
            "members": [{"file": rel(m), "sha256": sha256(m)} for m in members], "consult_below": consult_below,
            "note": note}  # fmt: skip
    out.write_text(json.dumps(spec, indent=2) + "\n")
    return spec


def main(argv: list[str] | None = None) -> int:
    """``python -m models.ensemble``: write a manifest, then load it once to check the members."""
    p = argparse.ArgumentParser(prog="python -m models.ensemble", description=__doc__.split("\n")[0])
    p.add_argument("--primary", type=Path, required=True, help="checkpoint whose photo-z, anomaly, ... are served")
    p.add_argument("--member", type=Path, action="append", required=True, help="checkpoint averaged in (repeat)")
    p.add_argument("--out", type=Path, required=True, help="manifest to write (.json)")
    p.add_argument("--consult-below", type=float, default=None,
                   help="consult the members only where the primary's top probability is below this (default: always)")
    p.add_argument("--note", default="", help="how the members were made")
    a = p.parse_args(argv)
    write_manifest(a.out, a.primary, a.member, a.note, a.consult_below)
    try:
        pred = load_ensemble(a.out)
    except ValueError as e:
        a.out.unlink()
        print(f"error: {e}")
        return 2
    print(f"{a.out}: {1 + len(a.member)} checkpoints, version {pred.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
