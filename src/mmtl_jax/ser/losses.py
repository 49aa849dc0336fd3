"""SER glue: the MMTL losses of the meta learner and transfer learner over the batch dict.

Batch contract (produced by `mmtl_jax.data`, host numpy, leading task axis = speaker task):
  'x'             float32 [tasks, B, T, F]   log spectrogram segments
  'lengths'       int32   [tasks, B]         valid frames of each segment (optional: absent
                                             = all T frames valid)
  'target'        int32   [tasks, B]         emotion class (Y^Q)
  'aux'           int32   [tasks, B, k]      auxiliary labels (Y^{S,j}, e.g. V/A/D bins)
  'target_weight' float32 [tasks, C]         per-speaker class weights of the emotion task
  'aux_weight'    float32 [tasks, k, C]      per-speaker class weights of each auxiliary task
The loss functions below take ONE task (no task axis); the meta package maps over tasks.
Class weights (w'_{i,c} = (N_i / N_{i,c}) / max_c, section 3.1.3) come from the pipeline.
"""

import inspect
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmtl_jax import meta, models
from mmtl_jax.records import Params

Batch = Any
InnerLoss = Callable[[Params, Batch, jax.Array], jax.Array]
TransferLoss = Callable[[Params, Params, Batch, jax.Array], jax.Array]


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array,
                           class_weights: jax.Array) -> jax.Array:
  """Class-weighted mean cross-entropy from LOGITS (softmax applied once, here).

  PyTorch's `CrossEntropyLoss(weight=w)` convention: sum_n w[y_n] CE_n / sum_n w[y_n], so the
  loss stays a per-sample average whatever the weights' scale.

  Args:
    logits: [N, C] (any float dtype; computed in at least float32).
    labels: [N] int in [0, C).
    class_weights: [C] non-negative.
  Returns:
    Scalar; 0 when every sample has weight 0.
  """
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  logp = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
  ce = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
  w = class_weights.astype(dtype)[labels]
  return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), jnp.finfo(dtype).tiny)


def accepts_lengths(module: Any) -> bool:
  """Whether the Flax module's `__call__` takes `lengths` (the built-in models do; a
  registered model may not, and then sees the zero padding as frames)."""
  return 'lengths' in inspect.signature(type(module).__call__).parameters


def apply_model(module: Any, variables: Any, x: jax.Array, lengths: Optional[jax.Array] = None,
                **kwargs: Any) -> Any:
  """module.apply(variables, x, **kwargs), with `lengths` [B] passed when given and the
  module takes it."""
  if lengths is not None and accepts_lengths(module):
    kwargs['lengths'] = lengths
  return module.apply(variables, x, **kwargs)


def _apply(module, params, x, rng, train, lengths=None):
  if train and rng is not None:
    return apply_model(module, {'params': params}, x, lengths, train=True,
                       rngs={'dropout': rng})
  return apply_model(module, {'params': params}, x, lengths)


def make_losses(model_config: Any) -> Tuple[InnerLoss, TransferLoss]:
  """The MMTL per-task losses (one speaker task, no task axis).

  inner_loss(theta, batch, rng): mean over the k auxiliary tasks of the weighted CE of the
    meta learner's logits (the ONE shared head) vs aux[:, j] with aux_weight[j] (eq. 4).
  transfer_loss(theta, phi, batch, rng): weighted CE of transfer(meta(x)) vs target with
    target_weight (eq. 5 and the outer loss of eqs. 6-7).
  Dropout (model.dropout > 0) is active in both, drawing from `rng`. batch['lengths'], when
  present, tells the meta learner each segment's valid frames.
  """
  meta_learner = models.build(model_config)
  transfer = models.transfer_learner(model_config)
  train = float(model_config.get('dropout', 0.0)) > 0

  def inner_loss(theta, batch, rng):
    logits = _apply(meta_learner, theta, batch['x'], rng, train, batch.get('lengths'))
    losses = jax.vmap(weighted_cross_entropy, in_axes=(None, 1, 0))(
        logits, batch['aux'], batch['aux_weight'])
    return losses.mean()

  def transfer_loss(theta, phi, batch, rng):
    logits = _apply(meta_learner, theta, batch['x'], rng, train, batch.get('lengths'))
    logits = transfer.apply({'params': phi}, logits)
    return weighted_cross_entropy(logits, batch['target'], batch['target_weight'])

  return inner_loss, transfer_loss


def init_params(model_config: Any, rng: jax.Array, input_shape: Sequence[int]) -> Params:
  """Initial {'theta': meta learner params, 'phi': transfer learner params} (float32).

  input_shape: one segment batch [B, T, F] (B may be 1).
  """
  meta_learner = models.build(model_config)
  transfer = models.transfer_learner(model_config)

  @jax.jit  # one compilation instead of one per initialiser op
  def init(rng):
    theta_rng, phi_rng = jax.random.split(rng)
    x = jnp.zeros(tuple(input_shape), jnp.float32)
    theta = meta_learner.init(theta_rng, x)['params']
    z = jnp.zeros((1, int(model_config.num_outputs)), jnp.float32)
    return {'theta': theta, 'phi': transfer.init(phi_rng, z)['params']}

  return init(rng)


def predict_logits(params: Params, x: jax.Array, model_config: Any,
                   lengths: Optional[jax.Array] = None) -> jax.Array:
  """Emotion logits transfer(meta(x)) for segments x [N, T, F] -> [N, C] (no dropout);
  lengths: int32 [N] valid frames of each segment, or None (all valid).

  Softmax these logits once for posteriors (utterance score = mean of segment posteriors).
  """
  logits = apply_model(models.build(model_config, dropout=0.0),
                       {'params': params['theta']}, x, lengths)
  return models.transfer_learner(model_config).apply({'params': params['phi']}, logits)


def mmtl_spec(config: ml_collections.ConfigDict) -> meta.MetaSpec:
  """MMTL's `MetaSpec` (`meta.recipes.mmtl`) from a full config: the losses of
  config.model, and config.meta's mode (a `meta.MODES` name, its estimator built with its
  defaults), alpha, beta, inner_steps, log_inner_after and task axis / memory options
  (configs/base.py documents them). The one place config.meta's names meet the library's:
  inner_steps is the recipe's `steps`."""
  m = config.meta
  inner_loss, transfer_loss = make_losses(config.model)
  return meta.recipes.mmtl(
      inner_loss, transfer_loss, alpha=float(m.alpha), beta=float(m.beta),
      steps=int(m.inner_steps), mode=str(m.mode), log_inner_after=bool(m.log_inner_after),
      strategy=str(m.strategy), task_chunk=int(m.task_chunk), task_groups=int(m.task_groups),
      task_reduce=str(m.task_reduce), remat=bool(m.remat))


def make_mmtl_step(config: ml_collections.ConfigDict, optimizer=None,
                   mesh: Optional[jax.sharding.Mesh] = None):
  """(init_fn, step_fn) of MMTL from a full config: `meta.make_step` of `mmtl_spec(config)`
  with Adam(config.meta.gamma) on theta and phi unless `optimizer` is given.

  init_fn(params) -> meta.MetaState; step_fn(params, state, batch, rng) -> (params, state,
  metrics) is pure; jit it with `jax.jit(step_fn, donate_argnums=(0, 1))`. `batch` follows
  the module's batch contract.
  """
  optimizer = optimizer or meta.recipes.mmtl_optimizer(float(config.meta.gamma))
  return meta.make_step(mmtl_spec(config), optimizer, mesh)


def random_batch(num_tasks: int, batch_size: int, frames: int, bins: int, num_aux: int = 3,
                 num_classes: int = 4, seed: int = 0, with_lengths: bool = False) -> dict:
  """A synthetic batch following the contract above (host numpy; for tests and benchmarks).

  with_lengths: also 'lengths' int32 [tasks, B], uniform in [frames // 2, frames], with the
  frames after each length zeroed in 'x' (as the feature store pads).
  """
  rng = np.random.default_rng(seed)
  batch = {
      'x': rng.normal(size=(num_tasks, batch_size, frames, bins)).astype(np.float32),
      'target': rng.integers(0, num_classes, (num_tasks, batch_size)).astype(np.int32),
      'aux': rng.integers(0, num_classes, (num_tasks, batch_size, num_aux)).astype(np.int32),
      'target_weight': rng.uniform(0.2, 1.0, (num_tasks, num_classes)).astype(np.float32),
      'aux_weight': rng.uniform(0.2, 1.0, (num_tasks, num_aux, num_classes)).astype(np.float32),
  }
  if with_lengths:
    lengths = rng.integers(frames // 2, frames + 1, (num_tasks, batch_size)).astype(np.int32)
    batch['x'] *= np.arange(frames)[None, None, :, None] < lengths[..., None, None]
    batch['lengths'] = lengths
  return batch


__all__ = ['accepts_lengths', 'apply_model', 'init_params', 'make_losses', 'make_mmtl_step',
           'mmtl_spec', 'predict_logits', 'random_batch', 'weighted_cross_entropy']

