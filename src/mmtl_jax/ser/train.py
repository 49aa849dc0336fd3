"""The experiment loop: every model x fold, trained, selected on dev, tested, tabulated.

Workdir layout::

  <workdir>/features/<hash>/        feature store (shared by every model and fold)
  <workdir>/synthetic_corpus/       the embedded corpus, when config.data.kind='synthetic'
  <workdir>/<model>/<fold>/checkpoints/   the fold's `TrainState`. orbax: params, optimiser
                                          state, best-on-dev params; JSON extra: step, seed,
                                          sampler position, best dev scores
  <workdir>/<model>/<fold>/logs/    TensorBoard events + metrics.jsonl: one TensorBoard run per
                                    (model, fold, seed), the same tags in each (so
                                    `tensorboard --logdir <workdir>` overlays them), with the
                                    run's hyper-parameters (HPARAMS) and its resolved config (TEXT)
  <workdir>/<model>/<fold>/bundle/  inference bundle of the dev-selected ('strict') params
  <workdir>/<model>/<fold>/result.json   the fold's test results (its presence = fold done)
                                         and its fingerprint (also in every checkpoint)
  <workdir>/config.json             the resolved config of the run (what --print_config
                                    prints), written before the first fold trains
  <workdir>/.mmtl_jax.lock          held while a run uses the workdir (mmtl_jax.run.lock)
  <workdir>/train.log               what the terminal shows, with the time of each line, and the
                                    periodic progress lines (appended by every run)
  <workdir>/results.json, results.md, confusion/   the tables (paper Tables 2/3 layout);
                                    results.json also holds the run's provenance

With several seeds (config.train.seeds), <workdir>/<model>/seed<s>/<fold>/ instead. <model>
and <fold> are `run.files.safe_component(s)` of the names: a fold named after a speaker such as
'/../x' or '.hidden' gets an encoded directory inside the workdir, and so do folds whose names
differ only in case ('S1', 's1'), which would share a directory on macOS or Windows.

One fold trains over one `TrainState`: `create_state`, then `restore_state` (its latest
checkpoint, if any), then `train_steps`, which runs `train_one_step` and, when due,
`select_on_dev` and `save_state`; `finish_fold` then tests the dev-selected params and writes
the inference bundle.

Progress (mmtl_jax.run.progress): on a terminal, tqdm bars of the fold-run and of all
fold-runs; elsewhere (nohup, SLURM), a line every config.train.report_every_s seconds with
the fold-run i/n, step, loss, steps/s and the ETAs of the fold-run and of the run. At the end
the terminal gets the summary table and the paths of results.md / results.json / the plots;
results.md keeps the per-fold tables.

Resuming: start the same command again. Finished folds are read back; an unfinished fold
restores its latest checkpoint. Batches and dropout derive from (seed, step, task) only, so
a killed and resumed run ends with the same results as an uninterrupted one.

Several devices / hosts (config.meta.strategy='sharded'): one 1-D mesh over jax.devices()
(every host's, after jax.distributed.initialize()); params and optimiser state are placed
replicated and every task batch sharded on its task axis before the jitted step (the
baselines then train data-parallel over the same split; see mmtl_jax.run.process). Every
process runs this same loop on the same batches. Orbax checkpoints are written collectively
by all processes; the JSON results, the tables and the inference bundles by process 0 only.
The workdir must be on a file system shared by all hosts.
"""

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from mmtl_jax.data import folds as folds_lib
from mmtl_jax.data import sampler as sampler_lib
from mmtl_jax.data import store as store_lib
from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.run import errors
from mmtl_jax.run import files
from mmtl_jax.run import lock as lock_lib
from mmtl_jax.run import metric_log
from mmtl_jax.run import process
from mmtl_jax.run import progress
from mmtl_jax.run import provenance as provenance_lib
from mmtl_jax.ser import config_check
from mmtl_jax.ser import evaluate as eval_lib
from mmtl_jax.ser import fingerprint as fingerprint_lib
from mmtl_jax.ser import report
from mmtl_jax.ser import results as results_lib
from mmtl_jax.ser import systems as systems_lib

log = logging.getLogger(__name__)
StaleRunError = fingerprint_lib.StaleRunError
WorkdirLockedError = lock_lib.WorkdirLockedError
CheckpointMismatchError = ckpt_lib.CheckpointMismatchError
TRAIN_LOG = 'train.log'

PyTree = Any


class NonFiniteLossError(errors.ExpectedError, FloatingPointError):
  """Raised when a training loss becomes NaN or Inf; the last good checkpoint is kept."""


def _fold_name(fold: Any) -> str:
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
    place_batch: puts a task batch where the step wants it (see `run.process.placement`).
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
  """Steps state.step + 1 .. run.steps, with dev selection and checkpoints when due."""
  for _ in range(state.step + 1, run.steps + 1):  # each iteration advances state.step by one
    state = train_one_step(state, run)
    if _due(state.step, run.eval_every, run.steps) or _due(state.step, run.checkpoint_every,
                                                            run.steps):
      check_finite_params(state, run)
    if _due(state.step, run.eval_every, run.steps):
      state = select_on_dev(state, run)
    if _due(state.step, run.checkpoint_every, run.steps):
      save_state(state, run.checkpointer, run.fingerprint)
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
            'fold': _fold_name(fold), 'test_speaker': fold.test_speaker,
            'dev_speaker': fold.dev_speaker, 'protocol': bundle_protocol,
            'dev_UA': state.best_dev[bundle_protocol]['UA'],
            'selected_step': state.best_dev[bundle_protocol]['step']})
  return {'fold': fold.index, 'name': _fold_name(fold), 'dev_speaker': fold.dev_speaker,
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
    mesh: `process.task_mesh(config)`: params and optimiser state go replicated on it and
      each task batch sharded on its task axis; None (default) leaves them where they are.
    fingerprint: the fold's fingerprint, stored in each checkpoint and compared on restore.
    reporter: the run's progress (its current unit is this fold), updated every step.

  Returns:
    The fold result: {'fold', 'dev_speaker', 'test_speaker', 'records': {protocol: {...}}}.
  """
  seed = int(config.seed)
  sampler = sampler_lib.TaskSampler(store, fold.train_speakers, config, seed)
  place_state, place_batch = process.placement(mesh)
  state = create_state(system, store, config, place_state)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(fold_dir, 'checkpoints'), max_to_keep=2,
                                       save_interval_steps=1)
  try:
    state = restore_state(checkpointer, state, place_state, fold_dir, fingerprint,
                          config.train.get('on_changed_config', 'error') == 'restart')
    with metric_log.MetricWriter(os.path.join(fold_dir, 'logs'), fold=_fold_name(fold)) as mw:
      log_run_config(mw, config, system.name, _fold_name(fold))
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


def _fold_result(system, evaluator, step_fn, store, fold, config, fold_dir, position, mesh,
                 expected, reporter, unit):
  """The fold's result.json if it is finished (reported as read back), else trains it
  (resuming) and writes it with its fingerprint `expected` (process 0 writes; every process
  trains); `reporter` gets it as unit `unit` with its line. `check_fold_dirs` has vetted
  fold_dir."""
  result_path = os.path.join(fold_dir, 'result.json')
  if os.path.exists(result_path):
    with open(result_path, encoding='utf-8') as f:
      result = json.load(f)
    reporter.read_back(unit, _fold_line(result))
    return result
  t_fold = time.time()
  reporter.start(unit, int(config.train.steps))
  result = train_fold(system, evaluator, step_fn, store, fold, config, fold_dir, position,
                      mesh, expected, reporter)
  result['seconds'] = time.time() - t_fold
  result[fingerprint_lib.RESULT_KEY] = expected
  if process.is_primary():
    files.atomic_write_json(result_path, files.to_jsonable(result))
  reporter.finish(_fold_line(result))
  return result


def _fold_line(result: Dict[str, Any]) -> str:
  """The fold's speakers and its test UA and WA under each protocol, on one line."""
  scores = ', '.join(f"{p} UA {r['UA']:.3f} WA {r['WA']:.3f}"
                     for p, r in result['records'].items())
  return f"test {result['test_speaker']}, dev {result['dev_speaker']}: {scores}"


def _fold_records(model_name: str, seed: int, result: Dict[str, Any]) -> List[Dict[str, Any]]:
  """The fold result as `results.fold_record`s, one per protocol."""
  return [results_lib.fold_record(
      model_name, p, result['name'], r['y_true'], r['y_pred'], seed=seed,
      dev_ua=r['dev_UA'], dev_wa=r['dev_WA'], utt_ids=r['utt_ids'],
      test_speaker=result['test_speaker'], dev_speaker=result['dev_speaker'],
      selected_step=r['selected_step']) for p, r in result['records'].items()]


def _train_model(model_name: str, config: ml_collections.ConfigDict, store: Any,
                 folds: List[Any], seeds: Tuple[int, ...], workdir: str,
                 mesh: Optional[jax.sharding.Mesh], reporter: progress.Progress
                 ) -> List[Dict[str, Any]]:
  """Every seed x fold of one model (finished folds read back); returns their fold records.
  Each is one unit of `reporter`, named '<model> <fold>' (and ' seed <s>' with several).

  The fold directories are <workdir>/<model>/<fold>, or <workdir>/<model>/seed<s>/<fold>
  with several seeds.
  """
  system = systems_lib.make_system(model_name, config)
  evaluator = eval_lib.Evaluator(system, store, config)
  step_fn = jax.jit(system.train_step, donate_argnums=(0, 1))
  records: List[Dict[str, Any]] = []
  for seed_config, i, fold, fold_dir in _fold_dirs(config, model_name, folds, seeds, workdir):
    seed = int(seed_config.seed)
    unit = f'{model_name} {_fold_name(fold)}' + (f' seed {seed}' if len(seeds) > 1 else '')
    result = _fold_result(system, evaluator, step_fn, store, fold, seed_config, fold_dir,
                          f'{model_name} seed {seed} fold {i + 1}/{len(folds)}', mesh,
                          _expected(seed_config, model_name, store), reporter, unit)
    records.extend(_fold_records(model_name, seed, result))
  return records


def _fold_dirs(config: ml_collections.ConfigDict, model_name: str, folds: List[Any],
               seeds: Tuple[int, ...], workdir: str):
  """(config with that seed, fold index, fold, fold dir) for every seed x fold of a model."""
  for seed in seeds:
    seed_config = config.copy_and_resolve_references()
    seed_config.seed = seed
    # Model and fold names come from the config and the corpus (a fold is named after its
    # speakers): encoded, so that no name ('/../x', '..') puts a file outside the workdir.
    model_dir = os.path.join(workdir, files.safe_component(model_name))
    if len(seeds) > 1:
      model_dir = os.path.join(model_dir, f'seed{seed}')
    names = files.safe_components([_fold_name(fold) for fold in folds])
    for i, fold in enumerate(folds):
      yield seed_config, i, fold, os.path.join(model_dir, names[i])


def _expected(config: ml_collections.ConfigDict, model_name: str, store: Any) -> Dict[str, Any]:
  return fingerprint_lib.fingerprint(config, model_name, store.manifest['config_hash'])


def check_fold_dirs(config: ml_collections.ConfigDict, store: Any, folds: List[Any],
                    seeds: Tuple[int, ...], workdir: str) -> None:
  """Before any training: every existing fold directory of this run must have been written
  under the current config (see `mmtl_jax.ser.fingerprint`). Temporaries of killed writes
  (`.result.json.*.tmp`, `.bundle.tmp-*`) in the workdir and its fold directories go first.

  Raises:
    StaleRunError: listing every stale fold's differing fields, unless
      config.train.on_changed_config == 'restart' (stale folds are then moved aside).
  """
  expected, stale = {}, {}
  if process.is_primary():  # the lock is held: temporaries are of killed writes
    files.remove_killed_writes(workdir)
  for model_name in config.train.models:
    for seed_config, _, _, fold_dir in _fold_dirs(config, model_name, folds, seeds, workdir):
      if process.is_primary():
        files.remove_killed_writes(fold_dir)
      expected[fold_dir] = _expected(seed_config, model_name, store)
      diffs = fingerprint_lib.stale_fields(fold_dir, expected[fold_dir])
      if diffs:
        stale[fold_dir] = diffs
  if stale and config.train.get('on_changed_config', 'error') != 'restart':
    raise StaleRunError(fingerprint_lib.mismatch_message(stale, workdir))
  if process.is_primary():
    for fold_dir in stale:
      progress.line(f'config changed: {fold_dir} moved to {fingerprint_lib.move_aside(fold_dir)}')
    for fold_dir, fields in expected.items():  # before any checkpoint of the fold is written
      fingerprint_lib.write(fold_dir, fields)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('mmtl_jax.ser.train: fold fingerprints written')


_NOTES = ("Protocol 'paper': fine-tune on the test speaker's auxiliary labels before "
          "predicting (section 2.4). 'strict': no label of the test speaker is used. "
          "Model selection on the dev speaker only. CNN-LSTM has no auxiliary task, so its "
          "two protocols coincide.")


def text_table(markdown: List[str]) -> List[str]:
  """A markdown table (header, '|---|--:|' row, rows) as aligned plain text: columns padded,
  the right-aligned ones ('--:') to the right, the separator row as dashes."""
  split = lambda l: [c.strip().replace('\\|', '|')
                     for c in re.split(r'(?<!\\)\|', l.strip())[1:-1]]
  rows = [split(l) for l in markdown]
  right = [c.endswith(':') for c in rows[1]]
  body = [rows[0]] + rows[2:]
  widths = [max(len(r[i]) for r in body) for i in range(len(rows[0]))]
  fmt = lambda r: '  '.join(c.rjust(w) if a else c.ljust(w)
                            for c, w, a in zip(r, widths, right)).rstrip()
  return [fmt(body[0]), '  '.join('-' * w for w in widths)] + [fmt(r) for r in body[1:]]


def terminal_summary(workdir: str, paths: Dict[str, str], runs: List[Dict[str, Any]],
                     reporter: progress.Progress, seconds: float) -> str:
  """What the terminal shows at the end: the summary table in the paper's layout (Tables 2
  and 3), where the rest is (results.md: the per-fold tables), and what this run trained."""
  plots = sorted(p for k, p in paths.items() if k.endswith('.png'))
  lines = ['', 'Results (%): pooled over the test utterances of all folds; mean ± std over '
           'folds × seeds', '']
  lines += text_table(report.SUMMARY_HEADER.splitlines() + [report.summary_row(r) for r in runs])
  lines += ['', f'results.md    {paths["markdown"]}  (per-fold tables, per-class recall, '
            'MMTL against each baseline)', f'results.json  {paths["json"]}']
  if plots:
    lines.append(f'plots         {os.path.dirname(plots[0])}{os.sep}  ({len(plots)} confusion '
                 'matrices)')
  lines += [f'log           {os.path.join(workdir, TRAIN_LOG)}',
            f'TensorBoard   tensorboard --logdir {workdir}', '']
  if reporter.worked == 0:
    lines.append(f'nothing trained: all {reporter.read_back_count} fold-runs read back from '
                 f'{workdir}; total {seconds:.1f} s')
  else:
    lines.append(f'trained {reporter.worked} fold-run(s)' + (
        f', read back {reporter.read_back_count}' if reporter.read_back_count else '')
                 + f'; total {seconds:.1f} s')
  return '\n'.join(lines)


def _write_tables(workdir: str, config: ml_collections.ConfigDict, classes: List[str],
                  fold_records: List[Dict[str, Any]], t0: float,
                  reporter: progress.Progress) -> Dict[str, Any]:
  """Aggregates the fold records into the tables, which process 0 writes and summarises on
  the terminal; returns <workdir>/results.json once written (every process)."""
  runs = results_lib.aggregate_runs(fold_records, classes)
  if process.is_primary():
    paths = results_lib.write_results(
        workdir, config, runs, notes=_NOTES,
        provenance_info=provenance_lib.provenance(t0, time.time()))
    reporter.line(terminal_summary(workdir, paths, files.to_jsonable(runs), reporter,
                                   time.time() - t0))
  if jax.process_count() > 1:  # the others read the tables once process 0 has written them
    multihost_utils.sync_global_devices('mmtl_jax.ser.train: results written')
  return results_lib.load_results(workdir)


CONFIG_JSON = 'config.json'


def check_paths(workdir: str) -> None:
  """Refuses, before any work, a --workdir that is not a directory and results files that
  are directories (they would fail only after every fold has trained).

  Raises:
    files.PathError: naming the path and what to do.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise files.PathError(f'--workdir is not a directory, {workdir}, give a directory (it is '
                          'created if missing)')
  for name in (results_lib.RESULTS_JSON, results_lib.RESULTS_MD):
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      raise files.PathError(f'{name} is a directory, {path}, remove or rename it: the run '
                            'writes its results there')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Features, then every model in config.train.models over every fold (and every seed of
  config.train.seeds; default: config.seed alone), then the tables.

  The workdir is locked for the whole run (`mmtl_jax.run.lock`; process 0 holds it).

  Returns the content of <workdir>/results.json.

  Raises:
    lock_lib.WorkdirLockedError: another run holds the workdir (naming its pid, host, start
      time and command); nothing was done.
  """
  config_check.check_config(config)  # every problem at once, before any work
  check_paths(workdir)
  t0 = time.time()
  os.makedirs(workdir, exist_ok=True)
  if not process.is_primary():  # one lock per run: the hosts of one run share the workdir
    return _train_and_evaluate(config, workdir, t0)
  try:
    workdir_lock = lock_lib.WorkdirLock(workdir).acquire()
  except OSError as e:  # a read-only workdir: a finished run needs no lock to be read
    if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
      raise
    return finished_results(config, workdir, e)
  try:
    return _train_and_evaluate(config, workdir, t0)
  finally:
    workdir_lock.release()


def finished_results(config: ml_collections.ConfigDict, workdir: str,
                     error: OSError) -> Dict[str, Any]:
  """<workdir>/results.json when it holds a finished run of `config` (fields that change no
  result, fingerprint.IGNORED, may differ); else `error` (the workdir cannot be written)."""
  path = os.path.join(workdir, results_lib.RESULTS_JSON)
  if not os.path.isfile(path):
    raise error
  content = results_lib.load_results(workdir)
  ignored = lambda flat: {k: v for k, v in flat.items() if k not in fingerprint_lib.IGNORED}
  stored = ignored(fingerprint_lib.flatten(content.get('config') or {}))
  if stored != ignored(fingerprint_lib.flatten(files.to_jsonable(config))):
    raise error
  print(f'{workdir} cannot be written ({error.strerror}); its finished results.json is read '
        'back without the lock', flush=True)
  return content


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, t0: float
                        ) -> Dict[str, Any]:
  """The body of `train_and_evaluate`, run while the workdir is locked; process 0 copies what
  it shows to <workdir>/train.log."""
  logging_to = (progress.log_to(os.path.join(workdir, TRAIN_LOG)) if process.is_primary()
                else contextlib.nullcontext())
  with logging_to:
    return _run(config, workdir, t0)


def _reporter(config: ml_collections.ConfigDict, folds: List[Any], seeds: Tuple[int, ...],
              workdir: str) -> progress.Progress:
  """The run's progress: one unit per (model, seed, fold); those with a result.json will be
  read back, the others trained (`pending`)."""
  dirs = [d for m in config.train.models for *_, d in _fold_dirs(config, m, folds, seeds, workdir)]
  every_s = progress.interval(config)
  return progress.Progress(
      'fold-run', len(dirs), every_s=every_s, enabled=process.is_primary(),
      pending=sum(not os.path.exists(os.path.join(d, 'result.json')) for d in dirs),
      heartbeat=every_s > 0)


def _run(config: ml_collections.ConfigDict, workdir: str, t0: float) -> Dict[str, Any]:
  """Features, folds, every model's fold-runs, then the tables."""
  process.enable_compilation_cache(config)
  # The folds are built from the corpus' speakers before any feature is extracted, so a bad
  # folds.which (or scheme) costs nothing; the store keeps every one of those speakers.
  store = store_lib.build_feature_store(
      config, workdir, check_corpus=lambda utts: folds_lib.make_folds([u.speaker for u in utts],
                                                                      config))
  progress.line(store_lib.format_summary(store))
  folds = folds_lib.make_folds(store, config)
  # Built once: every system and fold shares the mesh (and so their compilations).
  mesh = process.task_mesh(config)
  seeds = tuple(int(x) for x in config.train.get('seeds', ())) or (int(config.seed),)
  check_fold_dirs(config, store, folds, seeds, workdir)
  if process.is_primary():  # after the stale-fold check: a refused config is not recorded
    files.atomic_write_text(os.path.join(workdir, CONFIG_JSON), errors.config_json(config))
  fold_records: List[Dict[str, Any]] = []
  with _reporter(config, folds, seeds, workdir) as reporter:
    for model_name in config.train.models:
      fold_records.extend(_train_model(model_name, config, store, folds, seeds, workdir, mesh,
                                       reporter))
  return _write_tables(workdir, config, list(store.classes), fold_records, t0, reporter)
