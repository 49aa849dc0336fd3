"""The experiment loop: every model x fold, trained, selected on dev, tested, tabulated.

Workdir layout::

  <workdir>/features/<hash>/        feature store (shared by every model and fold)
  <workdir>/synthetic_corpus/       the embedded corpus, when config.data.kind='synthetic'
  <workdir>/<model>/<fold>/checkpoints/   orbax: params, optimiser state, best-on-dev params;
                                          JSON extra: step, rng seed, sampler position
  <workdir>/<model>/<fold>/logs/    TensorBoard events + metrics.jsonl
  <workdir>/<model>/<fold>/bundle/  inference bundle of the dev-selected ('strict') params
  <workdir>/<model>/<fold>/result.json   the fold's test results (its presence = fold done)
  <workdir>/results.json, results.md, confusion/   the tables (paper Tables 2/3 layout)

Resuming: start the same command again. Finished folds are read back; an unfinished fold
restores its latest checkpoint. Batches and dropout derive from (seed, step, task) only, so
a killed and resumed run ends with the same results as an uninterrupted one.

Several devices / hosts (config.meta.strategy='sharded'): one 1-D mesh over jax.devices()
(every host's, after jax.distributed.initialize()); params and optimiser state are placed
replicated and every task batch sharded on its task axis before the jitted step (the
baselines then train data-parallel over the same split). Every process runs this same loop
on the same batches. Orbax checkpoints are written collectively by all processes; the JSON
results, the tables and the inference bundles by process 0 only. The workdir must be on a
file system shared by all hosts.
"""

import json
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.ser import evaluate as eval_lib
from mmtl_jax.run import metric_log
from mmtl_jax.ser import results as results_lib
from mmtl_jax.ser import systems as systems_lib
from mmtl_jax.data import folds as folds_lib
from mmtl_jax.data import sampler as sampler_lib
from mmtl_jax.data import store as store_lib
from mmtl_jax.meta import strategy as strategy_lib

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
  """Raised when a training loss becomes NaN or Inf; the last good checkpoint is kept."""


def _fold_name(fold: Any) -> str:
  return f'fold{fold.index}' if not getattr(fold, 'name', None) else str(fold.name)


def task_mesh(config: ml_collections.ConfigDict) -> Optional[jax.sharding.Mesh]:
  """The 1-D mesh of strategy 'sharded' (all devices of all hosts); None otherwise.

  Raises:
    ValueError: several JAX processes with another strategy (each would train alone).
  """
  if str(config.meta.get('strategy', 'auto')) == 'sharded':
    return strategy_lib.default_mesh()
  if jax.process_count() > 1:
    raise ValueError(f"{jax.process_count()} JAX processes need config.meta.strategy='sharded'"
                     f', got {config.meta.get("strategy", "auto")!r}')
  return None


def placement(mesh: Optional[jax.sharding.Mesh]) -> Tuple[Callable[[Any], Any],
                                                          Callable[[Any], Any]]:
  """(place_state, place_batch): replicate / shard on the task axis over `mesh`, or
  identities without a mesh (every strategy other than 'sharded': nothing is moved)."""
  if mesh is None:
    return (lambda tree: tree), (lambda tree: tree)
  return (lambda tree: strategy_lib.replicate(tree, mesh),
          lambda batch: strategy_lib.shard_task_batch(batch, mesh))


def is_primary() -> bool:
  """True in the process that writes results and bundles (process 0; always on one host)."""
  return jax.process_index() == 0


def enable_compilation_cache(config: ml_collections.ConfigDict) -> None:
  """Turns on JAX's persistent compilation cache (config.compilation_cache_dir; '' = off)."""
  path = config.get('compilation_cache_dir', '')
  if path:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(path))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def train_fold(system: systems_lib.System, evaluator: eval_lib.Evaluator, step_fn: Any,
               store: Any, fold: Any, config: ml_collections.ConfigDict, fold_dir: str,
               position: str = '', mesh: Optional[jax.sharding.Mesh] = None
               ) -> Dict[str, Any]:
  """Trains one system on one fold with dev-based model selection; returns test records.

  Args:
    system: the System to train.
    evaluator: its Evaluator (jitted prediction and fine-tuning, built once per system).
    step_fn: jax.jit(system.train_step) (built once per system, so folds share compilations).
    store: the FeatureStore; fold: a `folds.Fold`; config: the full config.
    fold_dir: <workdir>/<model>/<fold>.
    position: text for the progress bar, e.g. 'mmtl 2/5'.
    mesh: `task_mesh(config)`: params and optimiser state go replicated on it and each task
      batch sharded on its task axis; None (default) leaves them where they are.

  Returns:
    The fold result: {'fold', 'dev_speaker', 'test_speaker', 'records': {protocol: {...}}}.
  """
  seed = int(config.seed)
  steps = int(config.train.steps)
  protocols = tuple(config.eval.protocols)
  sampler = sampler_lib.TaskSampler(store, fold.train_speakers, config, seed)
  key = jax.random.key(seed)
  place_state, place_batch = placement(mesh)
  params = place_state(system.init(jax.random.fold_in(key, 0), (1,) + store.features.shape[1:]))
  opt_state = place_state(system.init_opt(params))
  # Copies: `params` is donated to the first step, the best-on-dev trees must survive it.
  state = {'params': params, 'opt_state': opt_state,
           'best': {p: eval_lib.tree_copy(params) for p in protocols}}
  extra = {'step': 0, 'seed': seed, 'sampler_position': 0,
           'best_dev': {p: {'UA': -1.0, 'WA': -1.0, 'step': 0} for p in protocols}}

  every = int(config.train.checkpoint_every)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(fold_dir, 'checkpoints'), max_to_keep=2,
                                       save_interval_steps=1)
  try:
    restored = checkpointer.restore(target=state)
    if restored is not None:
      state, extra = restored
      state = place_state(state)
      log.info('%s: resumed from step %d', fold_dir, extra['step'])
    start = int(extra['step'])
    params, opt_state = state['params'], state['opt_state']
    best = dict(state['best'])
    eval_every = int(config.train.eval_every)
    with metric_log.MetricWriter(os.path.join(fold_dir, 'logs'), fold=_fold_name(fold)) as mw:
      bar = tqdm(range(start + 1, steps + 1), initial=start, total=steps, desc=position,
                 leave=False, dynamic_ncols=True, disable=None)
      for step in bar:
        batch = place_batch(sampler.batch(step))
        rng = jax.random.fold_in(key, step)
        params, opt_state, metrics = step_fn(params, opt_state, batch, rng)
        loss = float(metrics['loss'])
        if not np.isfinite(loss):
          raise NonFiniteLossError(
              f'{position or fold_dir}: non-finite loss {loss} at step {step}; stopped. The '
              f'last good checkpoint (step {checkpointer.latest_step()}) is kept in '
              f'{checkpointer.directory}; lower the learning rates or check the features.')
        if step % int(config.train.log_every) == 0 or step == steps:
          mw.write_scalars(step, {k: float(v) for k, v in metrics.items()})
          bar.set_postfix(loss=f'{loss:.3f}')
        if step % eval_every == 0 or step == steps:
          scores = eval_lib.dev_scores(evaluator, params, fold.dev_speaker, protocols, seed)
          for p, s in scores.items():
            # Strictly better only: ties keep the earlier (less trained) parameters.
            if s['UA'] > extra['best_dev'][p]['UA']:
              best[p] = eval_lib.tree_copy(params)
              extra['best_dev'][p] = {'UA': s['UA'], 'WA': s['WA'], 'step': step}
          mw.write_scalars(step, {f'dev_{k}_{p}': v for p, s in scores.items()
                                  for k, v in s.items()})
        if step % every == 0 or step == steps:
          extra.update(step=step, sampler_position=step)
          checkpointer.save(step, {'params': params, 'opt_state': opt_state, 'best': best},
                            extra, force=True)
      bar.close()
  finally:
    checkpointer.close()

  records = {}
  for p in protocols:
    r = evaluator.evaluate(best[p], fold.test_speaker, p, seed)
    records[p] = {'UA': r['UA'], 'WA': r['WA'], 'y_true': r['y_true'].tolist(),
                  'y_pred': r['y_pred'].tolist(), 'utt_ids': r['utt_ids'].tolist(),
                  'dev_UA': extra['best_dev'][p]['UA'], 'dev_WA': extra['best_dev'][p]['WA'],
                  'selected_step': extra['best_dev'][p]['step']}
  bundle_params = best['strict'] if 'strict' in best else best[protocols[0]]
  bundle_config = ml_collections.ConfigDict(config.to_dict())
  bundle_config.bundle_model = system.name
  bundle_config.classes = tuple(store.classes)
  if mesh is not None:  # host copies: the bundle must not depend on this run's devices
    bundle_params = jax.device_get(bundle_params)
  if is_primary():
    ckpt_lib.save_inference_bundle(os.path.join(fold_dir, 'bundle'), bundle_params,
                                   bundle_config)
  return {'fold': fold.index, 'name': _fold_name(fold), 'dev_speaker': fold.dev_speaker,
          'test_speaker': fold.test_speaker, 'records': records}


def _fold_result(system, evaluator, step_fn, store, fold, config, fold_dir, position, mesh):
  """The fold's result.json if it is finished, else trains it (resuming) and writes it
  (process 0 writes; every process trains)."""
  result_path = os.path.join(fold_dir, 'result.json')
  if os.path.exists(result_path):
    with open(result_path, encoding='utf-8') as f:
      return json.load(f)
  t_fold = time.time()
  result = train_fold(system, evaluator, step_fn, store, fold, config, fold_dir, position,
                      mesh)
  result['seconds'] = time.time() - t_fold
  if is_primary():
    results_lib.atomic_write_json(result_path, results_lib.to_jsonable(result))
  return result


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Features, then every model in config.train.models over every fold (and every seed of
  config.train.seeds; default: config.seed alone), then the tables.

  Returns the content of <workdir>/results.json.
  """
  t0 = time.time()
  os.makedirs(workdir, exist_ok=True)
  enable_compilation_cache(config)
  store = store_lib.build_feature_store(config, workdir)
  print(store_lib.format_summary(store), flush=True)
  folds = folds_lib.make_folds(store, config)
  mesh = task_mesh(config)  # built once: every system and fold shares it (and its compilation)
  fold_records: List[Dict[str, Any]] = []
  seeds = tuple(int(x) for x in config.train.get('seeds', ())) or (int(config.seed),)
  for model_name in config.train.models:
    system = systems_lib.make_system(model_name, config)
    evaluator = eval_lib.Evaluator(system, store, config)
    step_fn = jax.jit(system.train_step, donate_argnums=(0, 1))
    for seed in seeds:
      seed_config = config.copy_and_resolve_references()
      seed_config.seed = seed
      model_dir = os.path.join(workdir, model_name)
      if len(seeds) > 1:
        model_dir = os.path.join(model_dir, f'seed{seed}')
      for i, fold in enumerate(folds):
        fold_dir = os.path.join(model_dir, _fold_name(fold))
        result = _fold_result(system, evaluator, step_fn, store, fold, seed_config, fold_dir,
                              f'{model_name} seed {seed} fold {i + 1}/{len(folds)}', mesh)
        line = ', '.join(f"{p} UA {r['UA']:.3f} WA {r['WA']:.3f}"
                         for p, r in result['records'].items())
        print(f"{model_name} seed {seed} {result['name']} (test {result['test_speaker']}, dev "
              f"{result['dev_speaker']}): {line}", flush=True)
        for p, r in result['records'].items():
          fold_records.append(results_lib.fold_record(
              model_name, p, result['name'], r['y_true'], r['y_pred'], seed=seed,
              dev_ua=r['dev_UA'], dev_wa=r['dev_WA'], utt_ids=r['utt_ids'],
              test_speaker=result['test_speaker'], dev_speaker=result['dev_speaker'],
              selected_step=r['selected_step']))
  runs = results_lib.aggregate_runs(fold_records, list(store.classes))
  notes = ("Protocol 'paper': fine-tune on the test speaker's auxiliary labels before "
           "predicting (section 2.4). 'strict': no label of the test speaker is used. "
           "Model selection on the dev speaker only. CNN-LSTM has no auxiliary task, so its "
           "two protocols coincide.")
  if is_primary():
    paths = results_lib.write_results(workdir, config, runs, notes=notes)
    with open(paths['markdown'], encoding='utf-8') as f:
      print(f.read(), flush=True)
    print(f'total {time.time() - t0:.1f} s; results: {paths["json"]}', flush=True)
  if jax.process_count() > 1:  # the others read the tables once process 0 has written them
    multihost_utils.sync_global_devices('mmtl_jax.ser.train: results written')
  return results_lib.load_results(workdir)
