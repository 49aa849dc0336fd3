"""Meta-test (paper section 2.4) and the two evaluation protocols.

'paper':  before predicting a speaker, fine-tune on that speaker's AUXILIARY labels (for MMTL
          the meta learner theta; phi stays) with eval.finetune_optimizer at eval.finetune_lr
          (default SGD at gamma), as section 2.4 does. This
          uses the test speaker's V/A/D labels, which correlate with the emotion labels.
'strict': no label of the evaluated speaker is used at all; predict with the trained params.

Utterance prediction: the mean of its segments' posteriors, then argmax (section 3.1.1).
UA = mean per-class recall, WA = accuracy, both over utterances (`mmtl_jax.ser.metrics`).
"""

from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mmtl_jax.ser import metrics as metrics_lib
from mmtl_jax.data import folds as folds_lib
from mmtl_jax.ser.systems import System

PROTOCOLS = ('paper', 'strict')


class Evaluator:
  """Evaluates one System on speakers of a FeatureStore; jitted functions are built once.

  Args:
    system: the System.
    store: the FeatureStore.
    config: the full config (eval.finetune_steps, eval.finetune_optimizer, eval.finetune_lr,
      eval.batch_size, train.segments_per_speaker, model.num_outputs).
  """

  def __init__(self, system: System, store: Any, config: ml_collections.ConfigDict):
    self.system = system
    self.store = store
    self.config = config
    self.batch_size = int(config.eval.batch_size)
    self.finetune_steps = int(config.eval.finetune_steps)
    self._speaker_cache: Dict[str, Dict[str, np.ndarray]] = {}
    # The head has model.num_outputs >= len(classes) outputs (shared with the aux bins): an
    # emotion is one of the classes, so the posteriors are over the first len(classes) only
    # (argmax over all of them could name an output that is no class).
    self.num_classes = len(store.classes)
    self._predict = jax.jit(lambda p, x, lengths: jax.nn.softmax(
        system.predict_logits(p, x, lengths)[..., :self.num_classes], axis=-1))
    self._finetune_step = None
    if system.finetune_loss is not None and self.finetune_steps > 0:
      self._finetune_step = jax.jit(self._make_finetune_step(
          str(config.eval.get('finetune_optimizer', 'sgd')),
          float(config.eval.get('finetune_lr', config.meta.gamma))))

  def _make_finetune_step(self, name: str, lr: float):
    system = self.system
    optimizers = {'sgd': optax.sgd, 'adam': optax.adam}
    if name not in optimizers:
      raise ValueError(f"eval.finetune_optimizer {name!r}: 'sgd' | 'adam'")

    def optimizer(params):
      return optax.multi_transform(
          {'tune': optimizers[name](lr), 'freeze': optax.set_to_zero()},
          system.finetune_labels(params))

    def step(params, opt_state, batch, rng):
      loss, grads = jax.value_and_grad(system.finetune_loss)(params, batch, rng)
      updates, opt_state = optimizer(params).update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    self._finetune_init = lambda params: optimizer(params).init(params)
    return step

  def speaker_data(self, speaker: str) -> Dict[str, np.ndarray]:
    """One speaker's segments: x [N, T, F] float32, lengths [N] int32 (valid frames),
    target [N], aux [N, k], utt_index [N], target_weight [C] and aux_weight [k, C] (that
    speaker's class weights)."""
    if speaker not in self._speaker_cache:
      rows = self.store.rows(speaker)
      weights = folds_lib.speaker_class_weights(self.store, [speaker], self.config)[speaker]
      self._speaker_cache[speaker] = {
          'x': np.asarray(self.store.features[rows], np.float32),
          'lengths': self.store.length[rows].astype(np.int32),
          'target': self.store.label[rows].astype(np.int32),
          'aux': self.store.aux[rows].astype(np.int32),
          'utt_index': self.store.utt_index[rows].astype(np.int64),
          'target_weight': weights[0], 'aux_weight': weights[1],
      }
    return self._speaker_cache[speaker]

  def segment_posteriors(self, params: Any, x: np.ndarray,
                         lengths: Optional[np.ndarray] = None) -> np.ndarray:
    """Softmax posteriors [N, C] (C = len(store.classes): the head's first C outputs) of
    segments x [N, T, F] with valid frames lengths [N] (None: all T), in fixed-size padded
    batches so that one compilation serves every speaker."""
    n, b = x.shape[0], self.batch_size
    if lengths is None:
      lengths = np.full((n,), x.shape[1], np.int32)
    out = []
    for start in range(0, n, b):
      chunk, chunk_lengths = x[start:start + b], lengths[start:start + b]
      pad = b - chunk.shape[0]
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        chunk_lengths = np.concatenate([chunk_lengths, np.full((pad,), x.shape[1], np.int32)])
      out.append(np.asarray(self._predict(params, chunk, chunk_lengths))[:b - pad])
    return np.concatenate(out) if out else np.zeros((0, self.num_classes))

  def finetune(self, params: Any, speaker: str, seed: int) -> Any:
    """The 'paper' protocol's adaptation on the speaker's auxiliary labels: `finetune_steps`
    optimiser steps, or passes over all its segments with eval.finetune_unit = 'epochs'
    (see `finetune_batches`); returns new params (the input is not modified)."""
    if self._finetune_step is None:
      return params
    data = self.speaker_data(speaker)
    opt_state = self._finetune_init(params)
    key = jax.random.key(seed)
    unit = str(self.config.eval.get('finetune_unit', 'steps'))
    batches = finetune_batches(data['x'].shape[0], int(self.config.train.segments_per_speaker),
                               self.finetune_steps, unit, seed)
    for step, idx in enumerate(batches):
      batch = {'x': data['x'][idx], 'lengths': data['lengths'][idx], 'aux': data['aux'][idx],
               'aux_weight': data['aux_weight'],
               'target': data['target'][idx] * 0,  # never read: no emotion label is used
               'target_weight': np.zeros_like(data['target_weight'])}
      params, opt_state, _ = self._finetune_step(params, opt_state, batch,
                                                 jax.random.fold_in(key, step))
    return params

  def evaluate(self, params: Any, speaker: str, protocol: str, seed: int = 0
               ) -> Dict[str, Any]:
    """Utterance-level evaluation of one speaker under `protocol`.

    Returns:
      {'UA', 'WA', 'y_true' [U], 'y_pred' [U], 'utt_ids' [U], 'probs' [U, C]}.
    """
    if protocol not in PROTOCOLS:
      raise ValueError(f'unknown protocol {protocol!r}; expected one of {PROTOCOLS}')
    if protocol == 'paper':
      params = self.finetune(params, speaker, seed)
    data = self.speaker_data(speaker)
    probs = self.segment_posteriors(params, data['x'], data['lengths'])
    utt_rows, utt_probs = metrics_lib.utterance_posteriors(probs, data['utt_index'])
    _, y_true = metrics_lib.utterance_labels(data['target'], data['utt_index'])
    y_pred = metrics_lib.predictions(utt_probs)
    c = self.num_classes
    return {
        'UA': metrics_lib.unweighted_accuracy(y_true, y_pred, c),
        'WA': metrics_lib.weighted_accuracy(y_true, y_pred, c),
        'y_true': y_true, 'y_pred': y_pred, 'probs': utt_probs,
        'utt_ids': np.array([self.store.utterances[i]['utt_id'] for i in utt_rows]),
    }


def finetune_batches(n: int, b: int, count: int, unit: str, seed: int):
  """Index arrays [b] into a speaker's n segments for fine-tuning.

  unit 'steps': `count` minibatches drawn independently (with replacement when n < b).
  unit 'epochs': `count` passes over a fresh permutation each, cut into ceil(n / b) batches;
  the last batch is filled up from the pass's start, so every batch has b rows (one compiled
  step) and every segment is seen at least once per pass.
  """
  if unit == 'steps':
    for step in range(count):
      yield np.random.default_rng([seed, step]).choice(n, b, replace=n < b)
  elif unit == 'epochs':
    for epoch in range(count):
      order = np.random.default_rng([seed, epoch]).permutation(n)
      order = np.resize(order, -(-n // b) * b)  # wraps around to fill the last batch
      yield from order.reshape(-1, b)
  else:
    raise ValueError(f"eval.finetune_unit {unit!r}: 'steps' | 'epochs'")


def dev_scores(evaluator: Evaluator, params: Any, speaker: str, protocols: Tuple[str, ...],
               seed: int) -> Dict[str, Dict[str, float]]:
  """{protocol: {'UA', 'WA'}} on the dev speaker (model selection never looks at test)."""
  out = {}
  for protocol in protocols:
    r = evaluator.evaluate(params, speaker, protocol, seed)
    out[protocol] = {'UA': float(r['UA']), 'WA': float(r['WA'])}
  return out


def tree_copy(tree: Any) -> Any:
  """A device copy of a pytree, safe from buffer donation of the original."""
  return jax.tree.map(jnp.copy, tree)


__all__ = ['dev_scores', 'Evaluator', 'finetune_batches', 'PROTOCOLS', 'tree_copy']
