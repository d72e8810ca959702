"""mvmflow.filters.block_reduce against numpy's reduceat along both axes."""

import numpy as np
import pytest

from mvmflow.filters import block_reduce


@pytest.mark.parametrize("combine", [np.logical_or, np.logical_and])
@pytest.mark.parametrize("starts", [((0, 5, 64, 65), (0, 1, 40)), ((0,), (0,)),
                                    (tuple(range(0, 70, 7)), tuple(range(0, 90, 64)))])
def test_block_reduce_is_reduceat_along_both_axes(combine, starts):
    mask = np.ones((70, 90), bool)
    mask[:21, :70] = False  # whole blocks False: 'or' varies by block
    mask[[30, 50, 69], [80, 10, 89]] = False  # single pixels: 'and' varies by block
    rows, cols = (np.asarray(s) for s in starts)
    expected = combine.reduceat(combine.reduceat(mask, rows, axis=0), cols, axis=1)
    got = block_reduce(mask, rows, cols, combine)
    assert got.shape == (rows.size, cols.size)
    np.testing.assert_array_equal(got, expected)
    if rows.size > 1:  # the comparison is not between constant arrays
        assert expected.any() and not expected.all()
