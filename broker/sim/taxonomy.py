"""Class taxonomy of the simulated survey, using ELAsTiCC's numeric codes.

``FREQUENCY`` is the fraction of *simulated objects* per class (not a volumetric rate:
like ELAsTiCC/PLAsTiCC the mix is tuned so that every class yields alerts).  Classes in
``HELD_OUT`` never enter the train or validation splits; they exist for anomaly
detection and appear only in the test split.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimClass:
    """One simulated class.

    Attributes
    ----------
    code : int
        ELAsTiCC taxonomy code.
    name : str
        Short name.
    parent : int
        ELAsTiCC parent node (2220 SN-like, 2230 fast, 2240 long, 2320 periodic,
        2330 non-periodic).
    frequency : float
        Fraction of simulated objects.
    extragalactic : bool
        Whether the object has a redshift and a host galaxy.
    """

    code: int
    name: str
    parent: int
    frequency: float
    extragalactic: bool


CLASSES: tuple[SimClass, ...] = (
    SimClass(2222, "SN Ia", 2220, 0.25, True),
    SimClass(2223, "SN Ibc", 2220, 0.06, True),
    SimClass(2224, "SN II", 2220, 0.18, True),
    SimClass(2242, "SLSN", 2240, 0.02, True),
    SimClass(2243, "TDE", 2240, 0.02, True),
    SimClass(2246, "PISN", 2240, 0.01, True),
    SimClass(2232, "KN", 2230, 0.01, True),
    SimClass(2332, "AGN", 2330, 0.12, True),
    SimClass(2233, "M-dwarf flare", 2230, 0.06, False),
    SimClass(2234, "dwarf nova", 2230, 0.04, False),
    SimClass(2235, "microlensing", 2230, 0.02, False),
    SimClass(2323, "RR Lyrae", 2320, 0.08, False),
    SimClass(2322, "Cepheid", 2320, 0.03, False),
    SimClass(2325, "EB", 2320, 0.10, False),
)

BY_CODE: dict[int, SimClass] = {c.code: c for c in CLASSES}
HELD_OUT: frozenset[int] = frozenset({2232, 2246})  # kilonova, PISN


def codes() -> list[int]:
    """All class codes in a fixed order."""
    return [c.code for c in CLASSES]


def frequencies() -> list[float]:
    """Object fractions in the order of :func:`codes` (they sum to 1)."""
    tot = sum(c.frequency for c in CLASSES)
    return [c.frequency / tot for c in CLASSES]


def name_of(code: int) -> str:
    """Class name for an ELAsTiCC code."""
    return BY_CODE[code].name
