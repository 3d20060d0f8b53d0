"""Comparing record arrays: numpy's assert_array_equal treats NaN as unequal inside records."""

import numpy as np


def assert_records_equal(actual: np.ndarray, desired: np.ndarray, err_msg: str = "") -> None:
    """Same dtype, same length and, field by field, the same values (NaN equal to NaN)."""
    assert actual.dtype == desired.dtype, (actual.dtype, desired.dtype, err_msg)
    assert actual.shape == desired.shape, (actual.shape, desired.shape, err_msg)
    for name in desired.dtype.names:
        np.testing.assert_array_equal(actual[name], desired[name], err_msg=f"{err_msg} field {name}")
