"""The generator zoo: light-curve models from several packages behind one interface.

A *generator* declares the ELAsTiCC class codes it can make (:mod:`broker.sim.taxonomy`),
draws its own parameters from published ranges and returns noiseless fluxes (nJy) at the
simulator's (time, band) points.  The simulator picks, per object, one generator among
those named on the command line that can make the object's class (uniformly), and writes
the choice to ``truth.parquet`` and the training tables (``generator`` column), so that a
classifier can be trained on some generators and tested on another.

- ``templates``: ``models_transient`` / ``models_variable``, all 14 classes (the original
  simulator);
- ``redback``: :mod:`broker.sim.gen_redback`, SN Ia, SN Ibc, SN II, SLSN, TDE, KN, PISN;
- ``sncosmo``: :mod:`broker.sim.gen_sncosmo`, SN Ia (``hsiao-subsampled``);
- ``lightcurvelynx``: :mod:`broker.sim.gen_lynx`, AGN and eclipsing binaries;
- ``parsnip``: :mod:`broker.sim.gen_parsnip`, ParSNIP decoder draws from its latent prior,
  a class of its own (``2901 ParSNIP prior``, held out of training);
- ``rotators``: :mod:`broker.sim.models_rotator`, spotted rotating dwarfs with
  gyrochronology truth, a class of its own (``2902 Rotator``, held out of training);
- ``galactic``: :mod:`broker.sim.gen_galactic`, M-dwarf flares, dwarf novae, microlensing
  (``MulensModel``), RR Lyrae and Cepheids built from other models than the templates';
- ``mosfit``: :mod:`broker.sim.gen_mosfit`, SN Ibc (SEDONA emulator) and TDE (fallback) from
  MOSFiT's rest-frame SEDs: a third generator for the two classes that ``templates`` and
  ``redback`` disagree on most.

The external packages are imported lazily, only when their generator is used: the
default run (``templates`` only) needs numpy alone and draws exactly the same random
numbers as before the zoo existed, so its output is byte-identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from . import models_transient as mt
from . import models_variable as mv
from . import taxonomy as tx

DEFAULT: tuple[str, ...] = ("templates",)


class Generator(Protocol):
    """What the simulator needs from a light-curve generator.

    Attributes
    ----------
    name : str
        Short name (the value of the ``generator`` column).
    classes : frozenset of int
        ELAsTiCC codes this generator can make.
    """

    name: str
    classes: frozenset[int]

    def sample(self, code: int, rng: np.random.Generator, z: np.ndarray, t_lo: float,
               t_hi: float) -> dict[str, np.ndarray]:
        """Draw parameters for ``z.size`` objects of ``code`` visible in ``[t_lo, t_hi]``.

        Parameters
        ----------
        code : int
            ELAsTiCC class code; must be in :attr:`classes`.
        rng : numpy.random.Generator
            Random state.
        z : numpy.ndarray
            Redshift per object (NaN for Galactic classes).
        t_lo, t_hi : float
            Alert window (MJD).

        Returns
        -------
        dict of str to numpy.ndarray
            One array of length ``z.size`` per parameter (written to ``params_json``).
        """
        ...

    def flux(self, code: int, p: dict[str, np.ndarray], offsets: np.ndarray, mjd: np.ndarray,
             band: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Noiseless (difference flux, template flux) in nJy at points in CSR layout.

        Parameters
        ----------
        code : int
            ELAsTiCC class code.
        p : dict of str to numpy.ndarray
            Parameters from :meth:`sample`.
        offsets : numpy.ndarray
            Points of object ``i`` are ``mjd[offsets[i]:offsets[i+1]]``, sorted by time.
        mjd, band : numpy.ndarray
            Visit time (MJD) and band index (0..5 = ugrizy) per point.
        rng : numpy.random.Generator
            Random state (stochastic models only).

        Returns
        -------
        tuple of numpy.ndarray
            Difference flux and the static flux in the template image, per point.
        """
        ...


class TemplatesGenerator:
    """The simulator's own parametric templates (every class that is not generator-only)."""

    name = "templates"
    classes: frozenset[int] = frozenset(c for c in tx.codes() if c not in tx.GENERATOR_ONLY)

    def sample(self, code: int, rng: np.random.Generator, z: np.ndarray, t_lo: float,
               t_hi: float) -> dict[str, np.ndarray]:
        """See :meth:`Generator.sample`; parameter ranges are in the template modules."""
        if code not in self.classes:
            raise ValueError(f"the templates do not make class {code}")
        if code in mt.SPEC:
            return mt.sample_params(code, rng, z, t_lo, t_hi)
        p = mv.sample_params(code, rng, z.size, t_lo, t_hi)
        if code == 2332:  # the AGN walk runs in the rest frame
            p["z"] = z
        return p

    def flux(self, code: int, p: dict[str, np.ndarray], offsets: np.ndarray, mjd: np.ndarray,
             band: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`Generator.flux`."""
        if code in mt.SPEC:
            obj = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
            return mt.flux(code, p, obj, mjd, band), np.zeros(mjd.size)
        return mv.flux(code, p, offsets, mjd, band, rng)


class RotatorGenerator:
    """Spotted rotating dwarfs (:mod:`broker.sim.models_rotator`), numpy only."""

    name = "rotators"
    classes: frozenset[int] = frozenset({tx.ROTATOR_CODE})

    def sample(self, code: int, rng: np.random.Generator, z: np.ndarray, t_lo: float,
               t_hi: float) -> dict[str, np.ndarray]:
        """See :meth:`Generator.sample`."""
        if code not in self.classes:
            raise ValueError(f"the rotators generator does not make class {code}")
        return mv.sample_params(code, rng, z.size, t_lo, t_hi)

    def flux(self, code: int, p: dict[str, np.ndarray], offsets: np.ndarray, mjd: np.ndarray,
             band: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`Generator.flux`."""
        return mv.flux(code, p, offsets, mjd, band, rng)


def names() -> tuple[str, ...]:
    """Every generator name, in a fixed order."""
    return ("templates", "redback", "sncosmo", "lightcurvelynx", "parsnip", "rotators", "galactic",
            "mosfit")


def get(name: str) -> Generator:
    """The generator called ``name`` (imports its package on first use).

    Parameters
    ----------
    name : str
        One of :func:`names`.

    Returns
    -------
    Generator
        A fresh generator object.

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if name == "templates":
        return TemplatesGenerator()
    if name == "redback":
        from .gen_redback import RedbackGenerator

        return RedbackGenerator()
    if name == "sncosmo":
        from .gen_sncosmo import SncosmoGenerator

        return SncosmoGenerator()
    if name == "lightcurvelynx":
        from .gen_lynx import LynxGenerator

        return LynxGenerator()
    if name == "parsnip":
        from .gen_parsnip import ParsnipGenerator

        return ParsnipGenerator()
    if name == "rotators":
        return RotatorGenerator()
    if name == "galactic":
        from .gen_galactic import GalacticGenerator

        return GalacticGenerator()
    if name == "mosfit":
        from .gen_mosfit import MosfitGenerator

        return MosfitGenerator()
    raise ValueError(f"unknown generator {name!r}; choose from {', '.join(names())}")


def parse(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """Normalise ``"templates,redback"`` (or a sequence) to a tuple of known names.

    Parameters
    ----------
    spec : str or sequence of str or None
        Comma-separated names or a sequence; ``None`` means :data:`DEFAULT`.

    Returns
    -------
    tuple of str
        Unique names in the given order.

    Raises
    ------
    ValueError
        For an unknown name or an empty list.
    """
    if spec is None:
        return DEFAULT
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
    for s in out:
        if s not in names():
            raise ValueError(f"unknown generator {s!r}; choose from {', '.join(names())}")
    if not out:
        raise ValueError("at least one generator is needed")
    return out


def class_coverage(gens: dict[str, Generator]) -> set[int]:
    """Class codes that at least one of ``gens`` can make.

    Parameters
    ----------
    gens : dict of str to Generator
        Generators by name.

    Returns
    -------
    set of int
        The union of their classes.
    """
    return set().union(*(g.classes for g in gens.values()))


def assign(rng: np.random.Generator, codes: np.ndarray, gens: dict[str, Generator]) -> np.ndarray:
    """Generator name per object: uniform among the generators that make its class.

    With a single generator no random number is drawn, so default runs keep their
    random stream (and their bytes).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random state.
    codes : numpy.ndarray
        Class code per object.
    gens : dict of str to Generator
        The generators in use, by name.

    Returns
    -------
    numpy.ndarray
        Generator name per object (object dtype).

    Raises
    ------
    ValueError
        When no generator makes one of the classes.
    """
    keys = list(gens)
    if len(keys) == 1:
        return np.full(codes.size, keys[0], dtype=object)
    out = np.empty(codes.size, dtype=object)
    for c in np.unique(codes):
        rows = np.flatnonzero(codes == c)
        able = [k for k in keys if int(c) in gens[k].classes]
        if not able:
            raise ValueError(f"no generator among {keys} makes class {tx.name_of(int(c))}")
        out[rows] = np.asarray(able, dtype=object)[rng.integers(0, len(able), rows.size)]
    return out
