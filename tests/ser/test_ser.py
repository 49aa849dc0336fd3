"""SER glue: the class-weighted losses against the paper's formulas computed by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtl_jax import models
from mmtl_jax.ser import losses as ser


def paper_class_weights(labels, num_classes):
  """Section 3.1.3: w_c = N / N_c, w'_c = w_c / max_c w_c (classes present)."""
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  w = np.where(counts > 0, len(labels) / np.maximum(counts, 1), 0.0)
  return w / w.max()


def hand_weighted_ce(logits, labels, weights):
  """sum_n w[y_n] * (-log softmax(logits_n)[y_n]) / sum_n w[y_n], in float64 numpy."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  total, norm = 0.0, 0.0
  for n, y in enumerate(labels):
    total += weights[y] * -logp[n, y]
    norm += weights[y]
  return total / norm


def test_weighted_cross_entropy_equals_the_paper_formula():
  rng = np.random.default_rng(0)
  labels = np.array([0, 0, 0, 0, 1, 1, 2, 3, 3, 0])
  logits = rng.normal(size=(10, 4)).astype(np.float32) * 3
  w = paper_class_weights(labels, 4)
  np.testing.assert_allclose(w, [0.2, 0.5, 1.0, 0.5])  # N_c = 5, 2, 1, 2: w = 2, 5, 10, 5
  got = ser.weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                   jnp.asarray(w, jnp.float32))
  np.testing.assert_allclose(got, hand_weighted_ce(logits, labels, w), rtol=1e-5)
  # Softmax is applied once, to logits: shifting logits changes nothing, probabilities would.
  shifted = ser.weighted_cross_entropy(jnp.asarray(logits) + 5.0, jnp.asarray(labels),
                                       jnp.asarray(w, jnp.float32))
  np.testing.assert_allclose(shifted, got, rtol=1e-5)
  uniform = ser.weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.ones(4))
  np.testing.assert_allclose(uniform, hand_weighted_ce(logits, labels, np.ones(4)), rtol=1e-5)
  assert not np.isclose(float(uniform), float(got))


def test_inner_and_transfer_losses_follow_the_batch_contract(tiny_model):
  model = tiny_model()
  params = ser.init_params(model, jax.random.PRNGKey(0), (1, 8, 8))
  batch = jax.tree.map(lambda x: x[1], ser.random_batch(2, 6, 8, 8, num_aux=3, seed=3))
  inner_loss, transfer_loss = ser.make_losses(model)
  logits = models.build(model).apply({'params': params['theta']}, batch['x'])
  # Eq. 4's loss: the mean over the k auxiliary tasks, ONE shared head for all of them.
  expected = np.mean([hand_weighted_ce(logits, batch['aux'][:, j], batch['aux_weight'][j])
                      for j in range(3)])
  np.testing.assert_allclose(inner_loss(params['theta'], batch, None), expected, rtol=1e-5)
  target_logits = models.transfer_learner(model).apply({'params': params['phi']}, logits)
  expected = hand_weighted_ce(target_logits, batch['target'], batch['target_weight'])
  np.testing.assert_allclose(transfer_loss(params['theta'], params['phi'], batch, None),
                             expected, rtol=1e-5)
  np.testing.assert_allclose(ser.predict_logits(params, batch['x'], model), target_logits,
                             rtol=1e-5)


def test_init_params_builds_the_configured_architecture(tiny_model):
  model = tiny_model()
  params = ser.init_params(model, jax.random.PRNGKey(0), (1, 8, 8))
  assert set(params) == {'theta', 'phi'}
  assert set(params['phi']) == {'fc'} and params['phi']['fc']['kernel'].shape == (4, 4)
  theta = params['theta']
  assert [theta[f'conv_{i}']['kernel'].shape for i in range(2)] == [(3, 3, 1, 2), (2, 3, 2, 3)]
  assert theta['bilstm']['recurrent_kernel'].shape == (2, 4, 16)
  assert theta['head']['kernel'].shape == (5, 4)


@pytest.mark.slow  # measured: compiles the MMTL step
def test_make_mmtl_step_from_a_config_dict(tiny_model):
  from mmtl_jax.configs import base  # pylint: disable=g-import-not-at-top
  config = base.get_config()
  config.model = tiny_model()
  config.meta.mode = 'reptile'
  init_fn, step_fn = ser.make_mmtl_step(config)
  params = ser.init_params(config.model, jax.random.PRNGKey(0), (1, 8, 8))
  batch = ser.random_batch(2, 3, 8, 8, seed=0)
  new, _, metrics = jax.jit(step_fn)(params, init_fn(params), batch, jax.random.PRNGKey(1))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  delta = np.abs(new['theta']['head']['kernel'] - params['theta']['head']['kernel']).max()
  np.testing.assert_allclose(delta, config.meta.gamma, rtol=1e-3)  # first Adam step = gamma
