"""gradient_curve: the meta-gradient diagnostics recorded over MMTL meta-training.

Kept small for 2 CPU cores: one mode ('first_order') and the 'map' task strategy, which
compiles the per-task meta-gradient once instead of once per task.
"""

import json

import pytest

from mmtl_jax.tools import gradient_curve

# Both tests meta-train MMTL through the demo pipeline (feature store, sampler): measured slow.
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """Shared by the tests, so the feature store is built once (alpha is not a feature field)."""
  return str(tmp_path_factory.mktemp('curve_workdir'))


def _config(tiny_config, corpus_root, alpha, steps):
  config = tiny_config(corpus_root, models=('mmtl',), steps=steps)
  config.meta.strategy = 'map'
  config.meta.alpha = config.meta.beta = alpha
  return config


@pytest.mark.slow  # MMTL meta-training on tiny data, end to end
def test_curve_records_move_with_training_and_plot(tiny_config, corpus_root, workdir,
                                                   tmp_path):
  # alpha = beta = 0.3: the second-order terms first-order drops are visible.
  config = _config(tiny_config, corpus_root, 0.3, steps=4)
  result = json.loads(json.dumps(gradient_curve.curve(config, workdir, every=2,
                                                      modes=('first_order',))))
  records = result['records']
  assert [sorted(r) for r in records] == [['cosine', 'group', 'mode', 'norm_ratio',
                                           'step']] * len(records)
  assert [(r['step'], r['group']) for r in records] == [
      (s, g) for s in (0, 2, 4) for g in ('all', 'theta', 'phi')]
  assert {r['mode'] for r in records} == {'first_order'}
  assert result['settings']['steps'] == 4 and result['settings']['alpha'] == 0.3
  for r in records:
    assert -1.0 - 1e-6 <= r['cosine'] <= 1.0 + 1e-6 and r['norm_ratio'] > 0
  theta = [r for r in records if r['group'] == 'theta']
  assert min(r['cosine'] for r in theta) < 1.0 - 1e-5  # not trivially identical to exact
  # Diagnosed at the current params on a fixed batch: training moves the numbers.
  assert theta[0]['cosine'] != theta[-1]['cosine']
  assert theta[0]['norm_ratio'] != theta[-1]['norm_ratio']

  gradient_curve.plot(result, str(tmp_path / 'curve.png'))
  assert (tmp_path / 'curve.png').stat().st_size > 5000
  table = gradient_curve.format_table(result).splitlines()
  assert len(table) == 2 + 3 and table[-1].split()[0] == '4'


@pytest.mark.slow  # MMTL meta-training on tiny data, end to end
def test_no_inner_step_makes_first_order_exact(tiny_config, corpus_root, workdir):
  # alpha = beta -> 0: adaptation is the identity, so first-order IS the exact meta-gradient
  # (the second-order term is O(alpha), below float32 resolution at 1e-7; the config check
  # wants alpha > 0); a curve comparing against anything else (another mode, group or batch)
  # fails here. steps=0: only the diagnostics at the initial params.
  config = _config(tiny_config, corpus_root, 1e-7, steps=4)
  records = gradient_curve.curve(config, workdir, modes=('first_order',),
                                 steps=0)['records']
  assert [r['group'] for r in records] == ['all', 'theta', 'phi']
  for r in records:
    assert abs(r['cosine'] - 1.0) < 1e-5 and abs(r['norm_ratio'] - 1.0) < 1e-5, r
