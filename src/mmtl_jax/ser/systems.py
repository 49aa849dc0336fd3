"""The three systems of the paper's Table 2 behind one interface: MMTL and two baselines.

A `System` bundles pure functions over a parameter pytree:
  init(rng, input_shape [B, T, F]) -> params
  init_opt(params) -> opt_state
  train_step(params, opt_state, batch, rng) -> (params, opt_state, metrics)   (one iteration)
  predict_logits(params, x [N, T, F], lengths=None) -> [N, C] emotion logits; lengths:
    int32 [N] valid frames of each segment (None: all frames valid)
  finetune_loss(params, batch, rng) -> scalar or None: the auxiliary-task loss minimised on
    the test speaker under the 'paper' protocol (section 2.4); None when the system has no
    auxiliary tasks (plain CNN-LSTM), so both protocols coincide for it.
  finetune_labels(params) -> pytree of 'tune' | 'freeze' leaf labels (by name, never position)

`batch` follows the task-batch contract of `mmtl_jax.ser.losses` (every system passes its
'lengths' to the model, so none summarises the zero padding). The baselines see exactly the
same batches as MMTL (all speaker tasks of a step, pooled) and the same per-speaker class
weights, so the comparison differs only in the learning rule.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mmtl_jax import models
from mmtl_jax.registry import Registry
from mmtl_jax.ser import losses as ser


@dataclasses.dataclass(frozen=True)
class System:
  name: str
  init: Callable[[jax.Array, Tuple[int, ...]], Any]
  init_opt: Callable[[Any], Any]
  train_step: Callable[..., Tuple[Any, Any, Dict[str, jax.Array]]]
  predict_logits: Callable[..., jax.Array]
  finetune_loss: Optional[Callable[[Any, Any, jax.Array], jax.Array]]
  finetune_labels: Callable[[Any], Any]


class MultiTaskCNNLSTM(nn.Module):
  """CNN-LSTM+MTL (paper section 3.2): the meta learner's CNN-BiLSTM shared by all tasks,
  one FC `fc_hidden` -> FC `num_outputs` head per task ('emotion' and each auxiliary task).

  [B, T, F] (and lengths int32 [B] or None) -> {'emotion': [B, C], aux name: [B, C], ...}.
  """
  model_config: Any
  aux_tasks: Tuple[str, ...]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               lengths: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    mc = self.model_config
    dtype = models.compute_dtype(mc.get('dtype', 'float32'))
    trunk = models.build(mc, features_only=True, name='trunk')
    if lengths is not None and ser.accepts_lengths(trunk):
      h = trunk(x, train=train, lengths=lengths)
    else:
      h = trunk(x, train=train)
    out = {}
    for task in ('emotion',) + tuple(self.aux_tasks):
      y = nn.relu(nn.Dense(int(mc.fc_hidden), dtype=dtype, name=f'{task}_fc')(h))
      y = nn.Dropout(float(mc.get('dropout', 0.0)), deterministic=not train)(y)
      out[task] = nn.Dense(int(mc.num_outputs), dtype=dtype, name=f'{task}_head')(y)
      out[task] = out[task].astype(jnp.float32)
    return out


def _pooled_weighted_ce(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean over speaker tasks of the class-weighted CE: logits [tasks, B, C], labels [tasks, B],
  weights [tasks, C]."""
  return jax.vmap(ser.weighted_cross_entropy)(logits, labels, weights).mean()


def _flat(x: Optional[jax.Array]) -> Optional[jax.Array]:
  """[tasks, B, ...] -> [tasks * B, ...]; None stays None (a batch without 'lengths')."""
  return None if x is None else x.reshape((-1,) + x.shape[2:])


def _apply_rngs(config, rng):
  return {'dropout': rng} if float(config.model.get('dropout', 0.0)) > 0 else None


def _supervised_step(loss_fn, optimizer):
  """Plain (non-meta) training step on a pooled task batch."""

  def step(params, opt_state, batch, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads)}

  return step


def mmtl_system(config: ml_collections.ConfigDict) -> System:
  """MMTL: the meta learner theta and the transfer learner phi, updated by eqs. 4-7."""
  init_opt, step = ser.make_mmtl_step(config)
  inner_loss, _ = ser.make_losses(config.model)

  def init(rng, input_shape):
    return ser.init_params(config.model, rng, input_shape)

  def predict_logits(params, x, lengths=None):
    return ser.predict_logits(params, x, config.model, lengths)

  def finetune_loss(params, batch, rng):
    return inner_loss(params['theta'], batch, rng)

  def finetune_labels(params):
    return {'theta': jax.tree.map(lambda _: 'tune', params['theta']),
            'phi': jax.tree.map(lambda _: 'freeze', params['phi'])}

  def train_step(params, opt_state, batch, rng):
    params, opt_state, metrics = step(params, opt_state, batch, rng)
    return params, opt_state, dict(metrics, loss=metrics['outer_loss'])

  return System('mmtl', init, init_opt, train_step, predict_logits, finetune_loss,
                finetune_labels)


def baseline_lr(config: ml_collections.ConfigDict, name: str) -> float:
  """The baseline's own Adam learning rate, config.train.baseline_lr[name]; configs written
  before baselines had their own rate used the meta-learner's gamma."""
  rates = config.train.get('baseline_lr') or {}
  return float(rates[name]) if name in rates else float(config.meta.gamma)


def cnn_lstm_system(config: ml_collections.ConfigDict) -> System:
  """CNN-LSTM (Satt et al. 2017): the meta learner's architecture trained on emotion only."""
  model = models.build(config.model)
  optimizer = optax.adam(baseline_lr(config, 'cnn_lstm'))

  def init(rng, input_shape):
    return {'theta': model.init(rng, jnp.zeros(input_shape, jnp.float32))['params']}

  def loss_fn(params, batch, rng):
    logits = ser.apply_model(model, {'params': params['theta']}, _flat(batch['x']),
                             _flat(batch.get('lengths')), train=True,
                             rngs=_apply_rngs(config, rng))
    logits = logits.reshape(batch['target'].shape + logits.shape[-1:])
    return _pooled_weighted_ce(logits, batch['target'], batch['target_weight'])

  def predict_logits(params, x, lengths=None):
    return ser.apply_model(model, {'params': params['theta']}, x, lengths)

  return System('cnn_lstm', init, optimizer.init, _supervised_step(loss_fn, optimizer),
                predict_logits, None, lambda p: jax.tree.map(lambda _: 'freeze', p))


def cnn_lstm_mtl_system(config: ml_collections.ConfigDict) -> System:
  """CNN-LSTM+MTL: shared CNN-BiLSTM, task-specific heads; emotion loss + mean auxiliary loss.

  Under the 'paper' protocol the shared extractor and the auxiliary heads are fine-tuned on
  the test speaker's auxiliary tasks (section 3.2); the emotion head stays as trained.
  """
  aux_tasks = tuple(config.data.aux_tasks)
  model = MultiTaskCNNLSTM(config.model, aux_tasks)
  optimizer = optax.adam(baseline_lr(config, 'cnn_lstm_mtl'))

  def init(rng, input_shape):
    return model.init(rng, jnp.zeros(input_shape, jnp.float32))['params']

  def aux_loss(out, batch):
    # out[task]: [tasks, B, C]; batch['aux']: [tasks, B, k]; batch['aux_weight']: [tasks, k, C]
    losses = [_pooled_weighted_ce(out[t], batch['aux'][..., j], batch['aux_weight'][:, j])
              for j, t in enumerate(aux_tasks)]
    return jnp.mean(jnp.stack(losses)) if losses else jnp.zeros(())

  def forward(params, batch, rng, train):
    x_tasks = batch['x']
    out = model.apply({'params': params}, _flat(x_tasks), train=train,
                      lengths=_flat(batch.get('lengths')),
                      rngs=_apply_rngs(config, rng) if train else None)
    return {k: v.reshape(x_tasks.shape[:2] + v.shape[-1:]) for k, v in out.items()}

  def loss_fn(params, batch, rng):
    out = forward(params, batch, rng, True)
    emotion = _pooled_weighted_ce(out['emotion'], batch['target'], batch['target_weight'])
    return emotion + aux_loss(out, batch)

  def predict_logits(params, x, lengths=None):
    return model.apply({'params': params}, x, lengths=lengths)['emotion']

  def finetune_loss(params, batch, rng):
    # One speaker (no task axis): add a task axis of 1 to reuse the pooled losses.
    batch = jax.tree.map(lambda a: a[None], batch)
    return aux_loss(forward(params, batch, rng, True), batch)

  def finetune_labels(params):
    return {name: jax.tree.map(lambda _, n=name: 'freeze' if n.startswith('emotion_')
                               else 'tune', sub) for name, sub in params.items()}

  return System('cnn_lstm_mtl', init, optimizer.init, _supervised_step(loss_fn, optimizer),
                predict_logits, finetune_loss if aux_tasks else None, finetune_labels)


SYSTEMS: Registry[Callable[[ml_collections.ConfigDict], System]] = Registry(
    'system', 'config.train.models')
SYSTEMS.register('mmtl', mmtl_system)
SYSTEMS.register('cnn_lstm', cnn_lstm_system)
SYSTEMS.register('cnn_lstm_mtl', cnn_lstm_mtl_system)


def make_system(name: str, config: ml_collections.ConfigDict) -> System:
  """The System registered as `name` ('mmtl' | 'cnn_lstm' | 'cnn_lstm_mtl' | ...), built from
  `config`; ValueError listing the registered names if unknown."""
  return SYSTEMS.get(name)(config)


__all__ = [
    'baseline_lr', 'cnn_lstm_mtl_system', 'cnn_lstm_system', 'make_system', 'mmtl_system',
    'MultiTaskCNNLSTM', 'System', 'SYSTEMS',
]
