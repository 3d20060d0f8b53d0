"""Numba kernels for the synthetic price generator (``framework.synthetic``).

Conventions: axis 0 is time; variances are per bar, in squared log-return units.
"""

from __future__ import annotations

import numpy as np

from framework.jit import njit


@njit(cache=True)
def garch_variance_1d_nb(
    z: np.ndarray, omega: float, alpha: float, beta: float, h0: float
) -> np.ndarray:
    """Conditional variances of a GARCH(1,1) process driven by unit-variance innovations ``z``.

    ``h[0] = h0`` and ``h[t+1] = omega + alpha * h[t] * z[t]**2 + beta * h[t]`` (the shock being
    ``eps[t] = sqrt(h[t]) * z[t]``). Returns ``h``, one value per bar.
    """
    h = np.empty(z.shape[0], dtype=np.float64)
    var = h0
    for t in range(z.shape[0]):
        h[t] = var
        var = omega + (alpha * z[t] * z[t] + beta) * var
    return h
