"""compare_gradients: exact vs first-order vs Reptile per layer, FD check, orbax checkpoints."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmtl_jax.configs import compare_gradients
from mmtl_jax.ser import losses as ser
from mmtl_jax.tools import compare_gradients as compare_tool


@pytest.mark.slow  # float64 finite differences
def test_compare_reports_layers_fd_and_checkpoints(tiny_model, tmp_path):
  config = compare_gradients.get_config()
  config.model = tiny_model(dtype=config.model.dtype)  # float64, for the FD check
  config.meta.alpha = config.meta.beta = 0.3
  config.compare.tasks, config.compare.segments = 1, 3
  config.compare.frames, config.compare.bins = 8, 8
  params = ser.init_params(config.model, jax.random.PRNGKey(config.seed), (1, 8, 8))
  ocp.PyTreeCheckpointer().save(str(tmp_path / 'ckpt'), params)
  restored = ocp.PyTreeCheckpointer().restore(str(tmp_path / 'ckpt'))
  result = compare_tool.compare(config, checkpoints=[restored])

  assert result['finite_difference']['relative_error'] < 1e-6
  names = [layer['name'] for layer in result['layers']]
  assert 'theta/bilstm/recurrent_kernel' in names and 'phi/fc/kernel' in names
  assert len(names) == len(jax.tree.leaves(params))
  for layer in result['layers']:
    assert -1.0 - 1e-9 <= layer['cosine'] <= 1.0 + 1e-9
    assert layer['norm_ratio'] > 0 and layer['relative_error'] >= 0
  lstm = result['layers'][names.index('theta/bilstm/recurrent_kernel')]
  assert lstm['relative_error'] > 1e-4  # the second-order term is visible at alpha = 0.3
  # The checkpoint holds the same params as the default init: same analysis.
  again = result['checkpoints'][0]
  np.testing.assert_allclose([l['cosine'] for l in again['layers']],
                             [l['cosine'] for l in result['layers']], rtol=1e-9)

  compare_tool.plot(result, str(tmp_path / 'grads.png'))
  assert (tmp_path / 'grads.png').stat().st_size > 1000
