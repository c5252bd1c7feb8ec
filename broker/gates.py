"""``can_predict()`` gates: which alerts get a class, and why the others do not (ALeRCE-style).

A classifier trained on transients and variable stars has nothing true to say about an
asteroid, and a single detection does not carry enough information for a class: both
used to receive confident labels (real Rubin asteroids were called RR Lyrae). The gate
decides per alert, before anything is published, and its decision is written in
``annotations.classificationState`` so that a subscriber can tell "no class because the
alert is a moving object" from "no class because the model is off".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from broker.annotations import STATE_CLASSIFIED, STATE_NO_MODEL, STATE_SOLAR_SYSTEM, STATE_UNCLASSIFIED
from broker.batch import AlertTable


def is_solar_system(table: AlertTable) -> np.ndarray:
    """True where the triggering source is associated with a solar-system object.

    Rubin sets ``diaSource.ssObjectId`` (and, from schema 9, the ``ssSource`` record) for sources
    linked to a known moving object; older schemas write 0 for "none", the decoder -1 when absent.
    """
    return np.asarray(table["ssObjectId"]) > 0


@dataclass(frozen=True)
class ClassificationGate:
    """Decide per alert whether a class may be published.

    Parameters
    ----------
    min_detections : int
        Fewer detections (triggering source included) than this: ``unclassified``. With one
        detection there is no colour, no rise and no decline to tell classes apart.
    """

    min_detections: int = 2

    def states(self, table: AlertTable, n_det: np.ndarray, has_probs: np.ndarray) -> list[str]:
        """The ``classificationState`` of each alert.

        Parameters
        ----------
        table : AlertTable
            The decoded batch's per-alert table, length n.
        n_det : ndarray of int, shape (n,)
            Detections per alert (triggering source included).
        has_probs : ndarray of bool, shape (n,)
            The model produced a finite probability row for the alert.
        """
        solar = is_solar_system(table)
        out = []
        for k in range(len(n_det)):
            if solar[k]:
                out.append(STATE_SOLAR_SYSTEM)
            elif not has_probs[k]:
                out.append(STATE_NO_MODEL)
            elif n_det[k] < self.min_detections:
                out.append(STATE_UNCLASSIFIED)
            else:
                out.append(STATE_CLASSIFIED)
        return out
