"""Training on a subset of the simulator's light-curve generators (``train --exclude-generator``).

The simulator's training tables carry a ``generator`` column (``docs/simulation.md``,
'Generators'). :func:`filter_generators` keeps the rows of the chosen generators *before*
tokenising, so a leave-one-generator-out model never sees a light curve of the held-out
generator, not even for its temperature. The class list is not touched: the taxonomy comes from
the unfiltered table (:func:`models.train.taxonomy_of`), so a class that only the excluded
generator makes stays in the model with no training examples (:func:`missing_classes` names them
for the log).

:func:`widest_generator_temperature` is the calibration variant measured by ``eval logo``: one
temperature per validation generator, keeping the widest, on the grounds that a generator the
model never saw is at least as unfamiliar as the least familiar one it trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from models.heads import fit_temperature

#: Fewest validation examples of a generator for its own temperature to count.
MIN_GENERATOR_EXAMPLES = 50


@dataclass(frozen=True)
class GeneratorFilter:
    """Which generators' rows a model trains on (both empty: all).

    Attributes
    ----------
    exclude : tuple of str
        Generators whose rows are dropped.
    only : tuple of str
        If not empty, only these generators' rows are kept.
    """

    exclude: tuple[str, ...] = ()
    only: tuple[str, ...] = ()

    @classmethod
    def parse(cls, exclude: str | None, only: str | None) -> GeneratorFilter:
        """From the comma-separated ``--exclude-generator`` / ``--only-generator`` values."""
        def names(s: str | None) -> tuple[str, ...]:
            return tuple(sorted({n.strip() for n in (s or "").split(",") if n.strip()}))

        return cls(names(exclude), names(only))

    @property
    def active(self) -> bool:
        """Whether the filter drops anything."""
        return bool(self.exclude or self.only)


def filter_generators(df: pl.DataFrame, filt: GeneratorFilter) -> pl.DataFrame:
    """Rows of ``df`` made by the generators ``filt`` keeps.

    Raises
    ------
    ValueError
        The filter is active but the table has no ``generator`` column, or it names a
        generator the table does not hold.
    """
    if not filt.active:
        return df
    if "generator" not in df.columns:
        raise ValueError("--exclude-generator/--only-generator: the training table has no 'generator' column")
    present = set(df["generator"].unique().to_list())
    unknown = sorted(set(filt.exclude + filt.only) - present)
    if unknown:
        raise ValueError(f"unknown generator(s) {unknown}; the table holds {sorted(present)}")
    keep = ~pl.col("generator").is_in(list(filt.exclude))
    if filt.only:
        keep = keep & pl.col("generator").is_in(list(filt.only))
    return df.filter(keep)


def generators_of(df: pl.DataFrame) -> list[str]:
    """Sorted generator names of a table (``[]`` without a ``generator`` column)."""
    return sorted(df["generator"].unique().to_list()) if "generator" in df.columns else []


def missing_classes(df: pl.DataFrame, class_ids: tuple[int, ...], class_names: tuple[str, ...]) -> list[str]:
    """Names of taxonomy classes with no row in ``df``."""
    have = set(df["class_code"].to_list())
    return [n for c, n in zip(class_ids, class_names, strict=True) if c not in have]


def widest_generator_temperature(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                                 min_examples: int = MIN_GENERATOR_EXAMPLES) -> float:
    """The largest of the per-generator NLL temperatures of the validation set.

    Generators with fewer than ``min_examples`` rows are skipped; without any, the pooled
    temperature is returned.
    """
    temps = [fit_temperature(logits[groups == g], labels[groups == g])
             for g in np.unique(groups) if int((groups == g).sum()) >= min_examples]
    return max(temps) if temps else fit_temperature(logits, labels)
