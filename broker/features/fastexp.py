"""An ``exp`` that LLVM can vectorise, for the inner loops of the light-curve fits.

``math.exp`` compiles to a call into libm, which stops LLVM from vectorising a loop around it,
and the Bazin model needs two per point and per trial (:mod:`.fit_models`). :func:`vexp` is
branch-free arithmetic instead: Cody-Waite reduction ``x = k ln 2 + r`` with ``|r| <= ln 2 / 2``,
a degree-13 Taylor polynomial for ``e^r`` (truncation below 1e-17), and the scale ``2^k``
built in the exponent bits (the integer ``k`` is read off the mantissa of ``x / ln 2 + 1.5 * 2^52``,
since AVX2 has no packed float-to-int64 conversion). It agrees with libm to a few ulp over
``[-700, 700]``; below ``-700`` it returns 0 (libm: below 1e-304) and it saturates at ``e^709``.
"""

from __future__ import annotations

from typing import Any

import numba as nb
from numba import types
from numba.extending import intrinsic

#: ``ln 2`` split so that ``k * LN2_HI`` is exact for ``|k| < 2^20`` (fdlibm's constants).
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.4426950408889634
#: ``1.5 * 2^52``: adding it rounds to an integer held in the low mantissa bits.
SHIFTER = 6755399441055744.0
SHIFTER_BITS = 0x4338000000000000
#: Arguments are clamped to this range; below ``UNDERFLOW`` the result is exactly 0.
UNDERFLOW = -700.0
OVERFLOW = 709.0


@intrinsic
def _f64_bits(typingctx: Any, x: Any) -> Any:
    """The IEEE bits of a float64 as an int64 (a register move, no memory)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_f64(typingctx: Any, x: Any) -> Any:
    """The float64 whose IEEE bits are the int64 ``x``."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.int64), codegen


@nb.njit(cache=True, inline="always")
def vexp(x: float) -> float:
    """``e^x`` in branch-free arithmetic (see the module docstring for its range and accuracy)."""
    xc = min(max(x, UNDERFLOW), OVERFLOW)
    t = xc * INV_LN2 + SHIFTER
    kf = t - SHIFTER
    k = _f64_bits(t) - SHIFTER_BITS  # type: ignore[call-arg]
    r = (xc - kf * LN2_HI) - kf * LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    scaled = p * _bits_f64((k + 1023) << 52)  # type: ignore[call-arg]
    return scaled if x > UNDERFLOW else 0.0
