"""Class taxonomy of the simulated survey, using ELAsTiCC's numeric codes.

``FREQUENCY`` is the fraction of *simulated objects* per class (not a volumetric rate:
like ELAsTiCC/PLAsTiCC the mix is tuned so that every class yields alerts).  Classes in
``HELD_OUT`` never enter the train or validation splits; they exist for anomaly
detection and appear only in the test split.

A class with ``generator`` set is made only by that generator (:mod:`broker.sim.generators`)
and is simulated only when the generator is in use; otherwise its frequency is zero, so
runs without it draw exactly the same objects as before the class existed.  Such classes
are held out (a model never sees them in training) unless marked ``trainable`` (Rotator).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from broker.predict import ROTATOR_CODE


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
    generator : str or None
        The only generator that makes this class (None: the templates and others).
    zmax : float or None
        Largest host redshift drawn for it (None: the template's or 3).
    trainable : bool
        A generator-only class that still enters the train and validation splits (when its
        generator runs). Other generator-only classes are held out for anomaly detection.
    """

    code: int
    name: str
    parent: int
    frequency: float
    extragalactic: bool
    generator: str | None = None
    zmax: float | None = None
    trainable: bool = False


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
    # not an ELAsTiCC class: ParSNIP's latent prior (broker.sim.gen_parsnip), held out
    SimClass(2901, "ParSNIP prior", 2220, 0.05, True, generator="parsnip", zmax=0.6),
    # not an ELAsTiCC class: spotted rotating dwarfs with gyrochronology truth
    # (broker.sim.models_rotator), made by the ``rotators`` generator; a class to learn
    # (the age is attached to alerts classified as rotators), not an anomaly
    SimClass(ROTATOR_CODE, "Rotator", 2320, 0.08, False, generator="rotators", trainable=True),
)

#: Artefact ("bogus") objects of ``simulate(bogus_fraction=...)`` (:mod:`broker.sim.bogus`): a code
#: outside ELAsTiCC's and outside :data:`CLASSES` (never drawn, never in training tables or
#: ``HELD_OUT``), only in ``truth.parquet``.
BOGUS_CODE = 9900
BOGUS_NAME = "bogus"

BY_CODE: dict[int, SimClass] = {c.code: c for c in CLASSES}
GENERATOR_ONLY: dict[int, str] = {c.code: c.generator for c in CLASSES if c.generator}
# kilonova, PISN, and every generator-only class that is not trainable
HELD_OUT: frozenset[int] = frozenset({2232, 2246, *(c.code for c in CLASSES if c.generator and not c.trainable)})


def codes() -> list[int]:
    """All class codes in a fixed order."""
    return [c.code for c in CLASSES]


def frequencies(generators: Iterable[str] = ()) -> list[float]:
    """Object fractions in the order of :func:`codes` (they sum to 1).

    Parameters
    ----------
    generators : iterable of str
        Generators in use; a generator-only class gets its frequency only when its
        generator is among them (else 0).

    Returns
    -------
    list of float
        Fraction per class.
    """
    use = set(generators)
    f = [c.frequency if c.generator is None or c.generator in use else 0.0 for c in CLASSES]
    tot = sum(f)
    return [x / tot for x in f]


def name_of(code: int) -> str:
    """Class name for an ELAsTiCC code."""
    return BY_CODE[code].name


def code_of(name: str) -> int:
    """Class code for a class name (as in :data:`CLASSES`).

    Raises
    ------
    ValueError
        For an unknown name.
    """
    for c in CLASSES:
        if c.name == name:
            return c.code
    raise ValueError(f"unknown class {name!r}; choose from {', '.join(c.name for c in CLASSES)}")


def with_fractions(freq: Sequence[float], fractions: Mapping[int, float]) -> list[float]:
    """Set the object fraction of some classes, rescaling the others to fill the rest.

    Parameters
    ----------
    freq : sequence of float
        Fractions in the order of :func:`codes` (from :func:`frequencies`).
    fractions : mapping of int to float
        Wanted fraction per class code; each class must already be simulated (> 0).

    Returns
    -------
    list of float
        Fractions that sum to 1.

    Raises
    ------
    ValueError
        For a class not simulated in this run, a fraction outside (0, 1) or a sum >= 1.
    """
    cs = codes()
    out = list(freq)
    for code, f in fractions.items():
        if not 0.0 < f < 1.0:
            raise ValueError(f"class fraction of {name_of(code)} must be in (0, 1), got {f}")
        if out[cs.index(code)] <= 0.0:
            gen = BY_CODE[code].generator
            raise ValueError(f"class {name_of(code)} is not simulated in this run"
                             + (f" (it needs --generators ...,{gen})" if gen else ""))
    fixed = sum(fractions.values())
    rest = sum(x for c, x in zip(cs, out, strict=True) if c not in fractions)
    if fixed >= 1.0 or rest <= 0.0:
        raise ValueError("class fractions must leave room for the other classes")
    return [fractions[c] if c in fractions else x * (1.0 - fixed) / rest
            for c, x in zip(cs, out, strict=True)]
