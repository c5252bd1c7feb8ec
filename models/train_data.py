"""Training tables -> class tokens for ``alertbroker train``: taxonomy, generator filter, early views.

The taxonomy is always the one of the unfiltered ``train.parquet``, so a model's class list does
not depend on ``--exclude-generator`` / ``--only-generator`` (:mod:`models.generator_split`);
the filter is applied to the train and validation tables before tokenising.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from broker.features import FeatureConfig
from models.augment import Augment
from models.data import TokenData, concat, table_tokens
from models.generator_split import GeneratorFilter, filter_generators, generators_of, missing_classes


@dataclass
class ClassTables:
    """Class-training data of a training-table directory.

    Attributes
    ----------
    taxonomy : dict
        ``name``, ``class_ids``, ``class_names`` (of the unfiltered ``train.parquet``).
    train, val : TokenData
        Tokens of the kept rows (full light curves, then the early cuts).
    val_groups : ndarray of str or None
        Generator of each ``val`` row (None without a ``generator`` column).
    train_groups : ndarray of str or None
        Generator of each ``train`` row (artefacts: ``"bogus"``), for the adversarial critic
        (:mod:`models.adversarial`).
    generators : list of str
        Generators of the kept training rows.
    """

    taxonomy: dict[str, Any]
    train: TokenData
    val: TokenData
    val_groups: np.ndarray | None
    generators: list[str]
    train_groups: np.ndarray | None = None


def taxonomy_of(df: pl.DataFrame, name: str = "alertbroker-sim") -> dict[str, Any]:
    """Taxonomy (sorted class codes and names) of the classes present in ``df``."""
    pairs = df.select("class_code", "class_name").unique().sort("class_code")
    return {"name": name, "class_ids": pairs["class_code"].to_list(),
            "class_names": pairs["class_name"].to_list()}


def split_table(data_dir: Path, split: str, max_objects: int = 0,
                filt: GeneratorFilter | None = None) -> pl.DataFrame:
    """One split's table, filtered by generator, then ``max_objects`` rows drawn at random (seed 0).

    The tables are grouped by class, so a cap keeps a fixed random subset (in table order), not
    the first rows.
    """
    df = filter_generators(pl.read_parquet(Path(data_dir) / f"{split}.parquet"), filt or GeneratorFilter())
    if not max_objects or df.height <= max_objects:
        return df
    return df[np.sort(np.random.default_rng(0).choice(df.height, max_objects, replace=False))]


def class_data(data_dir: Path, split: str, class_ids: tuple[int, ...], early_views: int,
               seed: int, max_objects: int = 0, filt: GeneratorFilter | None = None,
               scenes: bool = False, bogus_fraction: float = 0.0, augment_views: int = 0,
               augment: Augment | None = None, features: FeatureConfig | None = None) -> TokenData:
    """Full-light-curve tokens plus ``early_views`` random early cuts of a split.

    ``scenes`` adds each example's cutout scene; ``bogus_fraction`` adds that many artefact objects
    per real one (:func:`models.cutout_data.bogus_table`), with the same views. ``augment_views``
    adds that many views stretched in time and tilted in colour by ``augment``
    (:mod:`models.augment`), each object cut after 1-10 detections (two thirds of them) or kept whole,
    as in the plain views. ``features`` is the featurizer's settings (None: the defaults, what
    ``alertbroker train`` records in the checkpoint).
    """
    df = split_table(data_dir, split, max_objects, filt)
    rng = np.random.default_rng(seed)
    if bogus_fraction > 0:
        from models.cutout_data import bogus_table

        df = pl.concat([df.with_columns(pl.lit(0).alias("bogus_kind")),
                        bogus_table(df, int(round(bogus_fraction * df.height)), rng)], how="vertical_relaxed")
    srng = np.random.default_rng(seed + 100) if scenes or bogus_fraction > 0 else None
    parts = [table_tokens(df, class_ids, config=features, scenes=srng)]
    for _ in range(early_views):
        parts.append(table_tokens(df, class_ids, rng.integers(1, 11, df.height), config=features, scenes=srng))
    if augment_views:
        aug = augment or Augment()
        arng = np.random.default_rng(seed + 200)
        for _ in range(augment_views):
            cut = np.where(arng.uniform(size=df.height) < 1 / 3, 1 << 30, arng.integers(1, 11, df.height))
            parts.append(table_tokens(df, class_ids, cut, config=features, scenes=srng,
                                      augment=lambda b: aug.apply(b, arng)))
    return concat(parts)


def load_class_tables(data_dir: Path, early_views: int, seed: int, max_objects: int,
                      filt: GeneratorFilter, log: Callable[[str], None] = print, scenes: bool = False,
                      bogus_fraction: float = 0.0, augment_views: int = 0,
                      augment: Augment | None = None) -> ClassTables:
    """Taxonomy and train/validation tokens of ``data_dir`` with ``filt`` applied.

    Raises
    ------
    ValueError
        The filter names a generator the tables do not hold, or they have no ``generator`` column.
    """
    taxonomy = taxonomy_of(pl.read_parquet(Path(data_dir) / "train.parquet"))  # fixed: all generators
    ids = tuple(taxonomy["class_ids"])
    tr_df = split_table(data_dir, "train", max_objects, filt)
    val_df = split_table(data_dir, "validation", max_objects, filt)
    gens = generators_of(tr_df)
    log(f"featurizing {data_dir} ({len(ids)} classes; generators: {','.join(gens) or 'unrecorded'})")
    empty = missing_classes(tr_df, ids, tuple(taxonomy["class_names"]))
    if empty:
        log(f"no training examples (no kept generator makes them): {', '.join(empty)}")
    train = class_data(data_dir, "train", ids, early_views, seed, max_objects, filt, scenes, bogus_fraction,
                       augment_views, augment)  # validation is never augmented
    val = class_data(data_dir, "validation", ids, early_views, seed + 1, max_objects, filt, scenes, bogus_fraction)
    return ClassTables(taxonomy, train, val, _row_groups(val_df, bogus_fraction, 1 + early_views), gens,
                       _row_groups(tr_df, bogus_fraction, 1 + early_views + augment_views))


def _row_groups(df: pl.DataFrame, bogus_fraction: float, views: int) -> np.ndarray | None:
    """Generator of each row :func:`class_data` makes from ``df`` (``views`` copies; artefacts ``"bogus"``)."""
    if "generator" not in df.columns:
        return None
    per_view = df["generator"].to_numpy().astype(str)
    if bogus_fraction > 0:
        per_view = np.r_[per_view, np.full(int(round(bogus_fraction * df.height)), "bogus")]
    return np.tile(per_view, views)
