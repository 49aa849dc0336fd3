"""Sinusoid few-shot regression: the meta package on a second domain (tiny runs only)."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtl_jax.examples import sinusoid
from mmtl_jax.configs import config_path
from mmtl_jax.configs import sinusoid as sinusoid_config


def small_sinusoid_config():
  c = sinusoid_config.get_config()
  c.model.hidden = (8, 8)
  c.train.steps = 20
  c.train.steps_per_call = 10
  c.train.meta_batch = 4
  c.eval.tasks = 50
  c.eval.query_points = 20
  return c


def test_tasks_follow_finn_et_al():
  c = sinusoid_config.get_config()
  tasks = sinusoid.sample_tasks(jax.random.PRNGKey(0), 500, {'support': 10, 'query': 7}, c.task)
  assert tasks['support_x'].shape == (500, 10, 1) and tasks['query_y'].shape == (500, 7, 1)
  assert 0.1 <= tasks['amplitude'].min() and tasks['amplitude'].max() <= 5.0
  assert 0.0 <= tasks['phase'].min() and tasks['phase'].max() <= np.pi
  assert -5.0 <= tasks['support_x'].min() and tasks['support_x'].max() <= 5.0
  expected = tasks['amplitude'][:, None, None] * jnp.sin(
      tasks['query_x'] - tasks['phase'][:, None, None])
  np.testing.assert_allclose(tasks['query_y'], expected, rtol=1e-6)


def test_losses_are_the_support_and_query_mse_over_params_theta():
  c = small_sinusoid_config()
  model = sinusoid.MLP(c.model.hidden)
  theta = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))['params']
  tasks = sinusoid.sample_tasks(jax.random.PRNGKey(1), 2, {'support': 5, 'query': 3}, c.task)
  task = jax.tree.map(lambda x: x[1], tasks)
  support_loss, query_loss = sinusoid.make_losses(model)
  mse = lambda x, y: jnp.mean((model.apply({'params': theta}, x) - y) ** 2)
  np.testing.assert_allclose(support_loss({'theta': theta}, task, None),
                             mse(task['support_x'], task['support_y']), rtol=1e-6)
  np.testing.assert_allclose(query_loss({'theta': theta}, task, None),
                             mse(task['query_x'], task['query_y']), rtol=1e-6)


@pytest.mark.slow  # over 5 s alone
def test_evaluate_is_mse_after_one_sgd_step():
  c = small_sinusoid_config()
  model = sinusoid.MLP(c.model.hidden)
  theta = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))['params']
  result = sinusoid.evaluate(c, theta)
  tasks = sinusoid.sample_tasks(jax.random.PRNGKey(c.eval.seed), c.eval.tasks,
                                {'support': c.task.k_support, 'query': c.eval.query_points},
                                c.task)
  t = jax.tree.map(lambda x: x[3], tasks)
  mse = lambda th, x, y: jnp.mean((model.apply({'params': th}, x) - y) ** 2)
  g = jax.grad(mse)(theta, t['support_x'], t['support_y'])
  adapted = jax.tree.map(lambda p, gi: p - c.meta.alpha * gi, theta, g)
  per_task = jax.vmap(lambda tk: mse(jax.tree.map(
      lambda p, gi: p - c.meta.alpha * gi, theta,
      jax.grad(mse)(theta, tk['support_x'], tk['support_y'])), tk['query_x'], tk['query_y']))
  np.testing.assert_allclose(per_task(tasks)[3], mse(adapted, t['query_x'], t['query_y']),
                             rtol=1e-5)
  np.testing.assert_allclose(result['mse_after'], per_task(tasks).mean(), rtol=1e-4)


@pytest.mark.slow  # over 5 s alone
def test_all_modes_and_baseline_train_and_report(tmp_path):
  c = small_sinusoid_config()
  results = sinusoid.run(c)
  assert set(results) == {'init', 'exact', 'first_order', 'reptile', 'pretrained'}
  for name, r in results.items():
    assert np.isfinite(r['mse_after']) and r['mse_after'] > 0, name
  assert results['exact']['steps'] == 20
  # Different update rules from the same init and tasks give different models.
  assert results['exact']['mse_after'] != results['reptile']['mse_after']


@pytest.mark.slow  # a subprocess
def test_cli_writes_json(tmp_path):
  out = tmp_path / 'sin.json'
  cmd = [sys.executable, 'experiments/sinusoid.py', f'--config={config_path("sinusoid")}',
         '--config.train.steps=10', '--config.train.steps_per_call=10',
         '--config.train.meta_batch=2', '--config.eval.tasks=10', '--config.model.hidden=(4,)',
         "--config.meta.modes=('first_order',)", '--config.train.baseline=False',
         f'--json={out}']
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'first_order' in proc.stdout
  data = json.loads(out.read_text())
  assert set(data['results']) == {'init', 'first_order'}


@pytest.mark.slow  # 1000 meta-steps of two modes
def test_exact_and_first_order_beat_the_pretrained_baseline():
  """After 1000 meta-steps both MAML variants adapt (one SGD step on K = 10 points) better
  than joint regression on the same tasks, beyond both 95% intervals. A meta-update that
  learned nothing useful for adaptation (e.g. a wrong inner step or an outer gradient taken
  at theta instead of the adapted params) lands near or above the baseline."""
  c = sinusoid_config.get_config()
  c.train.steps = 1000
  c.train.steps_per_call = 500
  c.train.meta_batch = 10
  c.meta.modes = ('exact', 'first_order')
  c.eval.tasks = 200
  c.eval.query_points = 50
  results = sinusoid.run(c)
  base = results['pretrained']
  for mode in ('exact', 'first_order'):
    r = results[mode]
    assert r['mse_after'] + r['mse_after_ci95'] < base['mse_after'] - base['mse_after_ci95'], (
        mode, r, base)
    assert r['mse_after'] < r['mse_before']  # the one adaptation step helps
