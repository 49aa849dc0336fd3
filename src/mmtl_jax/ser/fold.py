"""One fold-run: a system trained on one fold, selected on its dev speaker, tested.

One fold trains over one `TrainState`: `create_state`, then `restore_state` (its latest
checkpoint, if any), then `train_steps`, which runs `train_one_step` and, when due,
`select_on_dev` and `save_state`; `finish_fold` then tests the dev-selected params and writes
the inference bundle. `train_fold` does all of it for one <workdir>/<model>/<fold>
directory; ser/train.py runs it for every system x seed x fold, ser/pretrained.py steps a
fold of all speakers with the same functions.

Batches and dropout derive from (seed, step, task) only, so a killed and resumed fold ends
with the same results as an uninterrupted one.
"""

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import ml_collections
import numpy as np

from mmtl_jax.data import sampler as sampler_lib
from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.run import errors
from mmtl_jax.run import files
from mmtl_jax.run import metric_log
from mmtl_jax.run import process
from mmtl_jax.run import progress
from mmtl_jax.ser import evaluate as eval_lib
from mmtl_jax.ser import fingerprint as fingerprint_lib
from mmtl_jax.ser import placement as placement_lib
from mmtl_jax.ser import systems as systems_lib

log = logging.getLogger(__name__)

PyTree = Any


class NonFiniteLossError(errors.ExpectedError, FloatingPointError):
  """Raised when a training loss becomes NaN or Inf; the last good checkpoint is kept."""


class PreemptedError(errors.ExpectedError):
  """SIGTERM (a cluster's preemption notice: SLURM, Kubernetes) stopped the run at a step
  boundary, after a checkpoint of that step; the rerun resumes from it. Exit status 143
  (128 + SIGTERM), so a scheduler sees the run did not finish."""
  exit_code = 128 + int(signal.SIGTERM)


# Set by SIGTERM inside `sigterm_stops`; read at every step boundary (`stop_requested`).
_STOP = threading.Event()


@contextlib.contextmanager
def sigterm_stops():
  """While inside, SIGTERM only asks the training to stop: `train_steps` then writes a
  checkpoint of the step it has just done and raises PreemptedError (ser/train.py also stops
  between fold-runs). A second SIGTERM (or any outside the main thread's default action, where
  the application installed its own handler) is left alone / ends the process as usual."""
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
    yield
    return

  def handler(signum, frame):
    del signum, frame
    _STOP.set()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process

  _STOP.clear()
  signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _STOP.clear()


def stop_requested() -> bool:
  """Whether SIGTERM arrived inside `sigterm_stops` (the run should stop now)."""
  return _STOP.is_set()


def fold_name(fold: Any) -> str:
  """The fold's name (its speakers), else 'fold<index>'."""
  return f'fold{fold.index}' if not getattr(fold, 'name', None) else str(fold.name)


def _due(step: int, every: int, steps: int) -> bool:
  """True at multiples of `every` and at the last step."""
  return step % every == 0 or step == steps


@dataclasses.dataclass(frozen=True)
class TrainState:
  """Everything that changes while one fold trains; what a checkpoint restores.

  Not a pytree: `_state_to_checkpoint` splits it into the arrays and the JSON fields of a
  checkpoint, and `_state_from_checkpoint` joins them back.

  Attributes:
    params: the current parameters (donated to the jitted step, so replaced every step).
    opt_state: the optimiser state of `params` (donated likewise).
    best: {protocol: params with the best dev UA so far}; device copies of `params`.
    best_dev: {protocol: {'UA', 'WA', 'step'}} dev scores of `best` and the step they were
      taken at; UA and WA -1.0 and step 0 until the first dev evaluation.
    step: optimiser steps done; the next step trains on `sampler.batch(step + 1)`.
    sampler_position: batches drawn from the sampler (equal to `step`).
    seed: config.seed when the fold first started (a record; batches and dropout keys come
      from the config's seed).
  """
  params: PyTree
  opt_state: PyTree
  best: Dict[str, PyTree]
  best_dev: Dict[str, Dict[str, float]]
  step: int
  sampler_position: int
  seed: int


def _state_to_checkpoint(state: TrainState) -> Tuple[PyTree, Dict[str, Any]]:
  """(array pytree, JSON-able extra) as `ckpt_lib.Checkpointer.save` takes them."""
  arrays = {'params': state.params, 'opt_state': state.opt_state, 'best': state.best}
  extra = {'step': state.step, 'seed': state.seed, 'sampler_position': state.sampler_position,
           'best_dev': state.best_dev}
  return arrays, extra


def _state_from_checkpoint(arrays: PyTree, extra: Dict[str, Any]) -> TrainState:
  """The inverse of `_state_to_checkpoint` (extra as read back from JSON)."""
  return TrainState(params=arrays['params'], opt_state=arrays['opt_state'],
                    best=dict(arrays['best']), best_dev=extra['best_dev'],
                    step=int(extra['step']), sampler_position=int(extra['sampler_position']),
                    seed=int(extra['seed']))


def create_state(system: systems_lib.System, store: Any, config: ml_collections.ConfigDict,
                 place_state: Callable[[Any], Any]) -> TrainState:
  """The state at step 0: fresh params (key fold_in(key(seed), 0)) and optimiser state."""
  seed = int(config.seed)
  key = jax.random.fold_in(jax.random.key(seed), 0)
  params = place_state(system.init(key, (1,) + store.features.shape[1:]))
  opt_state = place_state(system.init_opt(params))
  protocols = tuple(config.eval.protocols)
  # Copies: `params` is donated to the first step, the best-on-dev trees must survive it.
  return TrainState(params=params, opt_state=opt_state,
                    best={p: eval_lib.tree_copy(params) for p in protocols},
                    best_dev={p: {'UA': -1.0, 'WA': -1.0, 'step': 0} for p in protocols},
                    step=0, sampler_position=0, seed=seed)


def restore_state(checkpointer: ckpt_lib.Checkpointer, state: TrainState,
                  place_state: Callable[[Any], Any], fold_dir: str,
                  fingerprint: Optional[Dict[str, Any]] = None,
                  restart: bool = False) -> TrainState:
  """The latest readable checkpoint of `checkpointer` (shaped and placed like `state`), or
  `state` itself when there is none, or when every checkpoint is damaged and `restart`
  (config.train.on_changed_config == 'restart'): they are then moved aside.

  Raises:
    StaleRunError: the checkpoint's stored fingerprint differs from `fingerprint` (checked
      before any array is read; checkpoints without one, from older runs, pass).
    ckpt_lib.CheckpointMismatchError: its shapes differ from `state`'s (one error naming the
      checkpoint and the leaves).
    ckpt_lib.CheckpointDamagedError: every checkpoint is damaged (not `restart`): naming
      them and how to go on.
  """
  def check(extra: Dict[str, Any]) -> None:
    if fingerprint is not None:
      fingerprint_lib.check_checkpoint(extra, fingerprint, checkpointer.directory)

  try:
    restored = checkpointer.restore(target=_state_to_checkpoint(state)[0], check_extra=check,
                                    discard_damaged=restart)
  except ckpt_lib.CheckpointDamagedError as e:
    raise ckpt_lib.CheckpointDamagedError(
        f'{e}, to go on: --config.train.on_changed_config=restart moves them aside and trains '
        f'the fold again (or remove {fold_dir})') from None
  if restored is None:
    return state
  arrays, extra = restored
  state = _state_from_checkpoint(place_state(arrays), extra)
  log.info('%s: resumed from step %d', fold_dir, state.step)
  return state


@dataclasses.dataclass(frozen=True)
class FoldRun:
  """What stays fixed while one fold trains (built by `train_fold`).

  Attributes:
    step_fn: jitted system.train_step, (params, opt_state, batch, rng) -> (params,
      opt_state, metrics); it donates params and opt_state.
    sampler: the fold's TaskSampler; `sampler.batch(step)` depends on (seed, step) only.
    key: jax.random.key(config.seed); step s trains with fold_in(key, s).
    place_batch: puts a task batch where the step wants it (see `ser.placement.placement`).
    evaluator: the system's Evaluator; dev_speaker: the fold's model-selection speaker.
    protocols: config.eval.protocols; seed: config.seed.
    steps, log_every, eval_every, checkpoint_every: the schedule from config.train.
    checkpointer: the fold's open Checkpointer; writer: its open MetricWriter.
    name: the fold in error messages (its position in the run, else its directory).
    fingerprint: the fold's `fingerprint.fingerprint`, stored in every checkpoint (or None).
    reporter: the run's progress, told every step (or None).
  """
  step_fn: Callable[..., Any]
  sampler: sampler_lib.TaskSampler
  key: jax.Array
  place_batch: Callable[[Any], Any]
  evaluator: eval_lib.Evaluator
  dev_speaker: str
  protocols: Tuple[str, ...]
  seed: int
  steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  checkpointer: ckpt_lib.Checkpointer
  writer: metric_log.MetricWriter
  name: str
  fingerprint: Optional[Dict[str, Any]] = None
  reporter: Optional[progress.Progress] = None


def train_one_step(state: TrainState, run: FoldRun) -> TrainState:
  """Step state.step + 1: one jitted update, the NaN guard, and (when due) metric logging.

  Raises:
    NonFiniteLossError: the step's loss is NaN or Inf (nothing of this step is saved).
  """
  step = state.step + 1
  batch = run.place_batch(run.sampler.batch(step))
  params, opt_state, metrics = run.step_fn(state.params, state.opt_state, batch,
                                           jax.random.fold_in(run.key, step))
  loss = float(metrics['loss'])
  if not np.isfinite(loss):
    raise NonFiniteLossError(
        f'{run.name}: non-finite loss {loss} at step {step}; stopped. The last good '
        f'checkpoint (step {run.checkpointer.latest_step()}) is kept in '
        f'{run.checkpointer.directory}; lower the learning rates or check the features.')
  if _due(step, run.log_every, run.steps):
    run.writer.write_scalars(step, {k: float(v) for k, v in metrics.items()})
  if run.reporter is not None:  # cheap: it writes only when a line is due
    run.reporter.update(step, loss=loss)
  return dataclasses.replace(state, params=params, opt_state=opt_state, step=step,
                             sampler_position=step)


def check_finite_params(state: TrainState, run: FoldRun) -> None:
  """The loss guard for the parameters: a step's loss is taken before its update, so a
  diverging update shows first in the parameters, which dev evaluation and the checkpoint
  would then use.

  Raises:
    NonFiniteLossError: some parameter is NaN or Inf after step state.step.
  """
  finite = jax.tree.reduce(lambda a, b: a and b, jax.tree.map(
      lambda p: bool(jax.numpy.isfinite(p).all()), state.params), True)
  if not finite:
    raise NonFiniteLossError(
        f'{run.name}: non-finite parameters after step {state.step} (the run diverged); '
        f'stopped. The last good checkpoint (step {run.checkpointer.latest_step()}) is kept in '
        f'{run.checkpointer.directory}; lower the learning rates or check the features.')


def select_on_dev(state: TrainState, run: FoldRun) -> TrainState:
  """Scores state.params on the dev speaker, logs the scores, and makes them the best of a
  protocol where their UA is strictly above that protocol's best so far."""
  scores = eval_lib.dev_scores(run.evaluator, state.params, run.dev_speaker, run.protocols,
                               run.seed)
  best, best_dev = dict(state.best), dict(state.best_dev)
  for p, s in scores.items():
    # Strictly better only: ties keep the earlier (less trained) parameters.
    if s['UA'] > best_dev[p]['UA']:
      best[p] = eval_lib.tree_copy(state.params)  # params are donated to the next step
      best_dev[p] = {'UA': s['UA'], 'WA': s['WA'], 'step': state.step}
  run.writer.write_scalars(state.step, {f'dev_{k}_{p}': v for p, s in scores.items()
                                        for k, v in s.items()})
  return dataclasses.replace(state, best=best, best_dev=best_dev)


def save_state(state: TrainState, checkpointer: ckpt_lib.Checkpointer,
               fingerprint: Optional[Dict[str, Any]] = None) -> None:
  """Starts the (asynchronous, collective) checkpoint of `state` as step state.step; the
  fold's fingerprint, if given, goes into the checkpoint's JSON item with it."""
  arrays, extra = _state_to_checkpoint(state)
  if fingerprint is not None:
    extra[fingerprint_lib.CHECKPOINT_KEY] = fingerprint
  checkpointer.save(state.step, arrays, extra, force=True)


def train_steps(state: TrainState, run: FoldRun) -> TrainState:
  """Steps state.step + 1 .. run.steps, with dev selection and checkpoints when due.

  Raises:
    PreemptedError: SIGTERM arrived (inside `sigterm_stops`); the step just done is
      checkpointed first (the caller's `checkpointer.close()` waits for it), so the rerun
      resumes there with the same batches and keys, and ends bit-identical.
  """
  for _ in range(state.step + 1, run.steps + 1):  # each iteration advances state.step by one
    state = train_one_step(state, run)
    saving = _due(state.step, run.checkpoint_every, run.steps) or stop_requested()
    if _due(state.step, run.eval_every, run.steps) or saving:
      check_finite_params(state, run)
    if _due(state.step, run.eval_every, run.steps):
      state = select_on_dev(state, run)
    if saving:
      save_state(state, run.checkpointer, run.fingerprint)
    if stop_requested():
      raise PreemptedError(
          f'stopped by SIGTERM after step {state.step} of {run.steps} ({run.name}), '
          f'checkpoint in {run.checkpointer.directory}, rerun the same command to resume')
  return state


def finish_fold(state: TrainState, system: systems_lib.System, evaluator: eval_lib.Evaluator,
                store: Any, fold: Any, config: ml_collections.ConfigDict, fold_dir: str,
                mesh: Optional[jax.sharding.Mesh]) -> Dict[str, Any]:
  """Tests each protocol's best-on-dev params, writes the inference bundle of the 'strict'
  ones (else the first protocol's; process 0 writes) and returns the fold result."""
  seed = int(config.seed)
  protocols = tuple(config.eval.protocols)
  records = {}
  for p in protocols:
    r = evaluator.evaluate(state.best[p], fold.test_speaker, p, seed)
    records[p] = {'UA': r['UA'], 'WA': r['WA'], 'y_true': r['y_true'].tolist(),
                  'y_pred': r['y_pred'].tolist(), 'utt_ids': r['utt_ids'].tolist(),
                  'dev_UA': state.best_dev[p]['UA'], 'dev_WA': state.best_dev[p]['WA'],
                  'selected_step': state.best_dev[p]['step']}
  bundle_protocol = 'strict' if 'strict' in state.best else protocols[0]
  bundle_params = state.best[bundle_protocol]
  bundle_config = ml_collections.ConfigDict(config.to_dict())
  bundle_config.bundle_model = system.name
  bundle_config.classes = tuple(store.classes)
  if mesh is not None:  # host copies: the bundle must not depend on this run's devices
    bundle_params = jax.device_get(bundle_params)
  if process.is_primary():  # info: what predict's header says the model is
    ckpt_lib.save_inference_bundle(
        os.path.join(fold_dir, 'bundle'), bundle_params, bundle_config, info={
            'fold': fold_name(fold), 'test_speaker': fold.test_speaker,
            'dev_speaker': fold.dev_speaker, 'protocol': bundle_protocol,
            'dev_UA': state.best_dev[bundle_protocol]['UA'],
            'selected_step': state.best_dev[bundle_protocol]['step']})
  return {'fold': fold.index, 'name': fold_name(fold), 'dev_speaker': fold.dev_speaker,
          'test_speaker': fold.test_speaker, 'records': records}


def log_run_config(writer: metric_log.MetricWriter, config: ml_collections.ConfigDict,
                   model_name: str, fold_name: str) -> None:
  """The fold's TensorBoard run gets its hyper-parameters (every config field that can change
  a result, and system, fold, seed), shown beside the latest dev_UA / test_UA / test_WA of
  each protocol, and the resolved config as text."""
  flat = fingerprint_lib.flatten(files.to_jsonable(config))
  hparams = {k: v for k, v in flat.items() if k not in fingerprint_lib.IGNORED}
  hparams.update(system=model_name, fold=fold_name, seed=int(config.seed))
  writer.write_hparams(hparams, [f'{k}_{p}' for p in config.eval.protocols
                                 for k in ('dev_UA', 'test_UA', 'test_WA')])
  text = json.dumps(files.to_jsonable(config), indent=1, sort_keys=True)
  writer.write_text('config', '\n'.join('    ' + l for l in text.splitlines()))  # markdown code


def train_fold(system: systems_lib.System, evaluator: eval_lib.Evaluator, step_fn: Any,
               store: Any, fold: Any, config: ml_collections.ConfigDict, fold_dir: str,
               position: str = '', mesh: Optional[jax.sharding.Mesh] = None,
               fingerprint: Optional[Dict[str, Any]] = None,
               reporter: Optional[progress.Progress] = None) -> Dict[str, Any]:
  """Trains one system on one fold with dev-based model selection; returns test records.

  Args:
    system: the System to train.
    evaluator: its Evaluator (jitted prediction and fine-tuning, built once per system).
    step_fn: jax.jit(system.train_step) (built once per system, so folds share compilations).
    store: the FeatureStore; fold: a `folds.Fold`; config: the full config.
    fold_dir: <workdir>/<model>/<fold>.
    position: the fold in error messages, e.g. 'mmtl seed 0 fold 2/5'.
    mesh: `placement.task_mesh(config)`: params and optimiser state go replicated on it and
      each task batch sharded on its task axis; None (default) leaves them where they are.
    fingerprint: the fold's fingerprint, stored in each checkpoint and compared on restore.
    reporter: the run's progress (its current unit is this fold), updated every step.

  Returns:
    The fold result: {'fold', 'dev_speaker', 'test_speaker', 'records': {protocol: {...}}}.
  """
  seed = int(config.seed)
  sampler = sampler_lib.TaskSampler(store, fold.train_speakers, config, seed)
  place_state, place_batch = placement_lib.placement(mesh)
  state = create_state(system, store, config, place_state)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(fold_dir, 'checkpoints'), max_to_keep=2,
                                       save_interval_steps=1)
  try:
    state = restore_state(checkpointer, state, place_state, fold_dir, fingerprint,
                          config.train.get('on_changed_config', 'error') == 'restart')
    with metric_log.MetricWriter(os.path.join(fold_dir, 'logs'), fold=fold_name(fold)) as mw:
      log_run_config(mw, config, system.name, fold_name(fold))
      run = FoldRun(
          step_fn=step_fn, sampler=sampler, key=jax.random.key(seed), place_batch=place_batch,
          evaluator=evaluator, dev_speaker=fold.dev_speaker,
          protocols=tuple(config.eval.protocols), seed=seed, steps=int(config.train.steps),
          log_every=int(config.train.log_every), eval_every=int(config.train.eval_every),
          checkpoint_every=int(config.train.checkpoint_every), checkpointer=checkpointer,
          writer=mw, name=position or fold_dir, fingerprint=fingerprint, reporter=reporter)
      state = train_steps(state, run)
      result = finish_fold(state, system, evaluator, store, fold, config, fold_dir, mesh)
      mw.write_scalars(state.step, {f'test_{k}_{p}': r[k] for p, r in result['records'].items()
                                    for k in ('UA', 'WA')})
  finally:
    checkpointer.close()
  return result


__all__ = [
    'check_finite_params', 'create_state', 'finish_fold', 'fold_name', 'FoldRun', 'log',
    'log_run_config', 'NonFiniteLossError', 'PreemptedError', 'PyTree', 'restore_state',
    'save_state', 'select_on_dev', 'sigterm_stops', 'stop_requested', 'train_fold',
    'train_one_step', 'train_steps', 'TrainState',
]
