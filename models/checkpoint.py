"""Self-describing checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is one dict of primitive containers and tensors::

    format            "alertbroker-multimodal"
    format_version    1
    token_layout      broker.tokens.TOKEN_LAYOUT_VERSION at training time
    config            ModelConfig.to_dict(), including encoder.feature_names: the ordered
                      registry names of the summary features the model reads
    taxonomy          {"name": str, "class_ids": [int], "class_names": [str]}
    metrics           {str: float}
    data_hash         str (SHA-256 prefix of the training tokens and targets)
    train             {str: int | float | str} (training settings, command line)
    state_dict        {str: Tensor} (weights, calibration and anomaly buffers)

Loading refuses a checkpoint written for another token layout, and one whose feature
names are missing (written before the feature contract: see :func:`upgrade_feature_names`)
or name a feature that the registry no longer defines. ``config.features`` records the
featurizer settings the model was trained on; by default loading also refuses a checkpoint
whose settings are not the current :class:`~broker.features.FeatureConfig` defaults,
because the command would feed it features computed otherwise. The predictor loads with
``any_features=True`` and featurizes with the checkpoint's own settings.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from broker.features.core import FeatureConfig
from broker.features.registry import FEATURE_NAMES
from broker.tokens import TOKEN_LAYOUT_VERSION
from models.model import ModelConfig, MultimodalModel

FORMAT = "alertbroker-multimodal"
FORMAT_VERSION = 1
#: State-dict prefixes a checkpoint may lack (written before these modules existed).
OPTIONAL: tuple[str, ...] = ("neighbours.", "contrast.", "embedding.", "forecast.", "physics.", "photoz_prior.",
                              "luminosity.")


def save_checkpoint(path: str | Path, model: MultimodalModel, taxonomy: dict[str, Any],
                    metrics: dict[str, float], data_hash: str,
                    train: dict[str, Any] | None = None) -> Path:
    """Write ``model`` and its description to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ck = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "token_layout": TOKEN_LAYOUT_VERSION,
        "config": model.cfg.to_dict(),
        "taxonomy": {"name": str(taxonomy["name"]), "class_ids": [int(c) for c in taxonomy["class_ids"]],
                     "class_names": [str(c) for c in taxonomy["class_names"]]},
        "metrics": {k: float(v) for k, v in metrics.items()}, "data_hash": str(data_hash),
        "train": dict(train or {}),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }
    torch.save(ck, path)
    return path


def served_digest(model: MultimodalModel) -> str:
    """8 hex digits of SHA-256 over ``model``'s config and weights: everything its answers depend on.

    Why: ``data_hash`` names the training data, and the parts fitted or switched after training (the
    temperature, the luminosity prior, the forecast head, the photo-z networks and whether they join
    the served photo-z) keep it, so two checkpoints that serve different answers would publish the same
    ``modelVersion``; a subscriber keying on it could not tell them apart.
    """
    h = hashlib.sha256(json.dumps(model.cfg.to_dict(), sort_keys=True, default=str).encode())
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:8]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", any_features: bool = False
                    ) -> tuple[MultimodalModel, dict[str, Any]]:
    """Load a checkpoint safely (``weights_only=True``).

    ``any_features=True`` accepts featurizer settings other than the current defaults; the
    caller must then featurize with ``model.cfg.features`` (the predictor does).

    Returns
    -------
    model : MultimodalModel
        In eval mode on ``device``.
    meta : dict
        The checkpoint without ``state_dict``.

    Raises
    ------
    ValueError
        Not a checkpoint of this format, another token layout version, or (unless
        ``any_features``) trained on featurizer settings other than the current defaults.
    """
    ck = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ValueError(f"{path}: not an {FORMAT} checkpoint")
    if ck["token_layout"] != TOKEN_LAYOUT_VERSION:
        raise ValueError(f"{path}: token layout {ck['token_layout']} != {TOKEN_LAYOUT_VERSION}")
    if "feature_names" not in ck["config"].get("encoder", {}):
        raise ValueError(f"{path}: the checkpoint does not record its summary-feature names; upgrade it "
                         "with models.checkpoint.upgrade_feature_names (python -m models.checkpoint PATH)")
    try:
        cfg = ModelConfig.from_dict(ck["config"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    current = FeatureConfig().settings()
    if not any_features and cfg.features != current:
        diff = {k: (v, current[k]) for k, v in cfg.features.items() if v != current[k]}
        raise ValueError(f"{path}: trained on other featurizer settings (checkpoint, current: {diff}); this command "
                         "featurizes with the current ones. Retrain it, or serve it: the predictor featurizes "
                         "with the checkpoint's own settings")
    model = MultimodalModel(cfg)
    # modules newer than the checkpoint (training aids, the empty neighbour bank) keep their init
    own = model.state_dict()
    model.load_state_dict({**{k: v for k, v in own.items() if k.startswith(OPTIONAL)}, **ck["state_dict"]})
    model.to(device).eval()
    meta = {k: v for k, v in ck.items() if k != "state_dict"}
    return model, meta


def upgrade_feature_names(path: str | Path, out: str | Path | None = None) -> Path:
    """Record the feature names of a checkpoint written before they were stored.

    Such a model read the first ``n_features`` registry features by position (ids past it were
    dropped): this writes exactly that, by name, so that later registry changes are caught
    instead of shifting its inputs. Idempotent.
    """
    ck = torch.load(Path(path), map_location="cpu", weights_only=True)
    enc = ck["config"]["encoder"]
    if "feature_names" not in enc:
        n = int(enc["n_features"])
        enc["feature_names"] = list(FEATURE_NAMES[:n])
        ck.setdefault("train", {})["feature_names_upgrade"] = (
            f"legacy checkpoint: read registry features 0..{n - 1} by position; names recorded")
    target = Path(out or path)
    torch.save(ck, target)
    return target


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        print(f"feature names recorded in {upgrade_feature_names(arg)}")


def with_new_part(model: MultimodalModel, cfg: ModelConfig, prefix: str) -> MultimodalModel:
    """A model of config ``cfg`` holding every weight of ``model`` except those under ``prefix``, which
    are new (as initialised); for heads fitted on a frozen checkpoint (``train-physics``,
    ``train-photoz-student``), checked afterwards with :func:`unchanged_except`."""
    new = MultimodalModel(cfg)
    own = new.state_dict()
    new.load_state_dict({**{k: v for k, v in own.items() if k.startswith(prefix)},
                         **{k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}})
    return new.eval()


def start_part(init: str | Path, prefix: str, threads: int, seed: int
               ) -> tuple[MultimodalModel, dict[str, Any], dict[str, torch.Tensor], float]:  # fmt: skip
    """The frozen checkpoint a part under ``prefix`` is fitted on (``threads`` torch threads, seeded):
    the model, its description, a copy of every weight outside ``prefix`` for :func:`save_part`'s
    check, and the start time for :func:`report_part`. Loaded with any feature settings: the parts
    fitted this way read their inputs through the checkpoint's own."""
    torch.set_num_threads(max(threads, 1))
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    model, meta = load_checkpoint(init, any_features=True)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(prefix)}
    return model, meta, before, t0


def save_part(path: str | Path, model: MultimodalModel, meta: dict[str, Any], train: dict[str, Any],
              before: dict[str, torch.Tensor], prefix: str | tuple[str, ...]) -> bool:
    """Write a checkpoint whose part under ``prefix`` was fitted on a frozen one (``meta``: that one's
    description, ``train``: the new ``train`` entry); whether every other weight, read back from the
    file, is bit-identical to ``before`` (:func:`unchanged_except`)."""
    save_checkpoint(path, model, meta["taxonomy"], meta.get("metrics", {}), meta["data_hash"], train)
    return unchanged_except(before, load_checkpoint(path)[0].state_dict(), prefix)


def report_part(path: Path, info: dict[str, float], same: bool, t0: float) -> int:
    """Print a fitted part's figures and the file written; the command's exit status (1: other weights moved)."""
    print(" ".join(f"{k}={v:.4g}" for k, v in info.items()) + f" other_weights_identical={int(same)}")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); {time.perf_counter() - t0:.0f} s")
    return 0 if same else 1


def unchanged_except(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str | tuple[str, ...]) -> bool:
    """Whether two state dicts hold the same keys and bit-identical tensors outside ``prefix``.

    The heads fitted on a frozen checkpoint (``train-forecast``, ``train-physics``) check with it
    that they changed nothing else.
    """
    ka = {k for k in a if not k.startswith(prefix)}
    return ka == {k for k in b if not k.startswith(prefix)} and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in ka)
