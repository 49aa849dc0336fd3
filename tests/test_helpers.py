"""tests/helpers.py: what assert_trees_close accepts, and what its failures say."""

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_trees_close


def _tree(scale=1.0):
  return {'net': {'kernel': np.arange(6.0).reshape(2, 3) * scale, 'bias': np.zeros(3)},
          'step': np.int32(7), 'half': jnp.ones(2, jnp.bfloat16)}


def test_equal_trees_pass_exactly_and_nan_equals_nan():
  assert_trees_close(_tree(), _tree(), rtol=0, atol=0)
  a, b = _tree(), _tree()
  a['net']['bias'][1] = b['net']['bias'][1] = np.nan
  assert_trees_close(a, b, rtol=0, atol=0)


def test_failure_names_the_leaf_and_its_errors():
  a, b = _tree(), _tree()
  a['net']['kernel'][1, 2] += 0.5  # 5.5 against 5
  with pytest.raises(AssertionError) as err:
    assert_trees_close(a, b, rtol=1e-3, atol=0, err_msg='grads')
  message = str(err.value)
  assert message.startswith('grads: 1 of 4 leaves differ')
  assert "['net']['kernel']" in message and "['net']['bias']" not in message
  assert 'max abs error 0.5 at (1, 2)' in message and 'max rel error 0.1' in message


def test_tolerances_and_the_leaf_scaled_atol():
  a, b = _tree(), _tree(1.0 + 1e-6)
  assert_trees_close(a, b, rtol=2e-6, atol=0)
  with pytest.raises(AssertionError):
    assert_trees_close(a, b, rtol=0, atol=1e-6)  # 5e-6 off at the largest entry
  assert_trees_close(a, b, rtol=0, atol=2e-6, leaf_scaled_atol=True)  # 2e-6 x 5


def test_structure_shape_and_dtype_mismatches():
  a, b = _tree(), _tree()
  del b['net']['bias']
  with pytest.raises(AssertionError, match=r"only in actual \[\"\['net'\]\['bias'\]\"\]"):
    assert_trees_close(a, b, rtol=0, atol=0)
  with pytest.raises(AssertionError, match=r'shape \(2,\) != \(3,\)'):
    assert_trees_close([np.zeros(2)], [np.zeros(3)], rtol=0, atol=0)
  f64 = {'x': np.zeros(2)}
  assert_trees_close(f64, {'x': np.zeros(2, np.float32)}, rtol=0, atol=0)
  with pytest.raises(AssertionError, match='dtype float64 != float32'):
    assert_trees_close(f64, {'x': np.zeros(2, np.float32)}, rtol=0, atol=0, check_dtype=True)
