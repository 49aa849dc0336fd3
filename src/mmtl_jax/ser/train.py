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

One fold-run (its `TrainState`, steps, dev selection, test and bundle) is ser/fold.py's
`train_fold`; the tables and the terminal summary are ser/tables.py's. This module runs them
for every system x seed x fold and is the entry (`train_and_evaluate`).

Progress (mmtl_jax.run.progress): on a terminal, tqdm bars of the fold-run and of all
fold-runs; elsewhere (nohup, SLURM), a line every config.train.report_every_s seconds with
the fold-run i/n, step, loss, steps/s and the ETAs of the fold-run and of the run. At the end
the terminal gets the summary table and the paths of results.md / results.json / the plots;
results.md keeps the per-fold tables.

Preemption: SIGTERM (what SLURM and Kubernetes send before killing) stops the run at the
next step boundary, after a checkpoint of that step, with one line and exit status 143.

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
import errno
import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import jax
from jax.experimental import multihost_utils
import ml_collections

from mmtl_jax.data import folds as folds_lib
from mmtl_jax.data import store as store_lib
from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.run import errors
from mmtl_jax.run import files
from mmtl_jax.run import lock as lock_lib
from mmtl_jax.run import process
from mmtl_jax.run import progress
from mmtl_jax.ser import config_check
from mmtl_jax.ser import evaluate as eval_lib
from mmtl_jax.ser import fingerprint as fingerprint_lib
from mmtl_jax.ser import fold as fold_lib
from mmtl_jax.ser import placement as placement_lib
from mmtl_jax.ser import results as results_lib
from mmtl_jax.ser import systems as systems_lib
from mmtl_jax.ser import tables

# The run's errors, importable from the entry's module.
StaleRunError = fingerprint_lib.StaleRunError
WorkdirLockedError = lock_lib.WorkdirLockedError
CheckpointMismatchError = ckpt_lib.CheckpointMismatchError
NonFiniteLossError = fold_lib.NonFiniteLossError
PreemptedError = fold_lib.PreemptedError
TRAIN_LOG = tables.TRAIN_LOG


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
  result = fold_lib.train_fold(system, evaluator, step_fn, store, fold, config, fold_dir,
                               position, mesh, expected, reporter)
  result['seconds'] = time.time() - t_fold
  result[fingerprint_lib.RESULT_KEY] = expected
  if process.is_primary():
    files.atomic_write_json(result_path, files.to_jsonable(result))
  reporter.finish(_fold_line(result))
  return result


def _fold_line(result: Dict[str, Any]) -> str:
  """The fold's speakers (control characters escaped: they come from the corpus' files) and
  its test UA and WA under each protocol, on one line."""
  scores = ', '.join(f"{p} UA {r['UA']:.3f} WA {r['WA']:.3f}"
                     for p, r in result['records'].items())
  return errors.printable(f"test {result['test_speaker']}, dev {result['dev_speaker']}: "
                          f'{scores}')


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
    unit = errors.printable(f'{model_name} {fold_lib.fold_name(fold)}'  # names from files
                            + (f' seed {seed}' if len(seeds) > 1 else ''))
    result = _fold_result(system, evaluator, step_fn, store, fold, seed_config, fold_dir,
                          f'{model_name} seed {seed} fold {i + 1}/{len(folds)}', mesh,
                          _expected(seed_config, model_name, store), reporter, unit)
    records.extend(_fold_records(model_name, seed, result))
    if fold_lib.stop_requested():  # SIGTERM while the fold-run finished: stop before the next
      raise fold_lib.PreemptedError(f'stopped by SIGTERM after fold-run {unit} finished, '
                                    f'{workdir}, rerun the same command to resume')
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
    names = files.safe_components([fold_lib.fold_name(fold) for fold in folds])
    for i, fold in enumerate(folds):
      yield seed_config, i, fold, os.path.join(model_dir, names[i])


def _expected(config: ml_collections.ConfigDict, model_name: str, store: Any) -> Dict[str, Any]:
  return fingerprint_lib.fingerprint(config, model_name, store.manifest['config_hash'])


def check_fold_dirs(config: ml_collections.ConfigDict, store: Any, folds: List[Any],
                    seeds: Tuple[int, ...], workdir: str) -> None:
  """Before any training: every existing fold directory of this run must have been written
  under the current config (see `mmtl_jax.ser.fingerprint`). Temporaries of killed writes
  (`.<name>.mmtl_jax-tmp-<hex>`: run/files.py `temp_name`) in the workdir and its fold directories go first.

  Raises:
    files.PathError: a model, seed or fold directory (or a fold's checkpoints, logs, bundle)
      is a symbolic link (`fingerprint.refuse_links`); nothing was removed or moved.
    StaleRunError: listing every stale fold's differing fields, unless
      config.train.on_changed_config == 'restart' (stale folds are then moved aside).
  """
  expected, stale = {}, {}
  if process.is_primary():  # the lock is held: temporaries are of killed writes
    files.remove_killed_writes(workdir)
  for model_name in config.train.models:
    for seed_config, _, _, fold_dir in _fold_dirs(config, model_name, folds, seeds, workdir):
      fingerprint_lib.refuse_links(workdir, fold_dir)  # before anything is removed or moved
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


def _finished(config: ml_collections.ConfigDict, workdir: str) -> Optional[Dict[str, Any]]:
  """<workdir>/results.json when it holds a finished run of `config` (fields that change no
  result, fingerprint.IGNORED, may differ; results.json is written after every fold-run has
  finished), else None."""
  path = os.path.join(workdir, results_lib.RESULTS_JSON)
  if not os.path.isfile(path):
    return None
  content = results_lib.load_results(workdir)
  ignored = lambda flat: {k: v for k, v in flat.items() if k not in fingerprint_lib.IGNORED}
  stored = ignored(fingerprint_lib.flatten(content.get('config') or {}))
  if stored != ignored(fingerprint_lib.flatten(files.to_jsonable(config))):
    return None
  return content


def finished_results(config: ml_collections.ConfigDict, workdir: str,
                     error: OSError) -> Dict[str, Any]:
  """<workdir>/results.json when it holds a finished run of `config` (see `_finished`); else
  `error` (the workdir cannot be written)."""
  content = _finished(config, workdir)
  if content is None:
    raise error
  print(f'{workdir} cannot be written ({error.strerror}); its finished results.json is read '
        'back without the lock', flush=True)
  return content


def _build_store(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """The run's feature store; the folds are built from the corpus' speakers before any
  feature is extracted, so a bad folds.which (or scheme) costs nothing.

  Returns:
    the store, or a finished run's results.json content (a dict) when the store is damaged
    but every fold-run has finished: reading back results needs no store.

  Raises:
    store_lib.StoreDamagedError: a damaged store of a run that has not finished (one line
      naming the file and saying to delete the store directory).
  """
  try:
    return store_lib.build_feature_store(
        config, workdir, check_corpus=lambda utts: folds_lib.make_folds(
            [u.speaker for u in utts], config))
  except store_lib.StoreDamagedError as e:
    content = _finished(config, workdir)
    if content is None:
      raise
    progress.line(f'the feature store cannot be used ({errors.one_line(e)}); the finished '
                  'results.json of this config is read back without it')
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
  store = _build_store(config, workdir)
  if isinstance(store, dict):  # a finished run read back past a damaged store
    return store
  progress.line(store_lib.format_summary(store))
  folds = folds_lib.make_folds(store, config)
  # Built once: every system and fold shares the mesh (and so their compilations).
  mesh = placement_lib.task_mesh(config)
  seeds = tuple(int(x) for x in config.train.get('seeds', ())) or (int(config.seed),)
  check_fold_dirs(config, store, folds, seeds, workdir)
  if process.is_primary():  # after the stale-fold check: a refused config is not recorded
    files.atomic_write_text(os.path.join(workdir, CONFIG_JSON), errors.config_json(config))
  fold_records: List[Dict[str, Any]] = []
  # SIGTERM (a cluster's preemption) stops at the next step boundary, after a checkpoint.
  with _reporter(config, folds, seeds, workdir) as reporter, fold_lib.sigterm_stops():
    for model_name in config.train.models:
      fold_records.extend(_train_model(model_name, config, store, folds, seeds, workdir, mesh,
                                       reporter))
  return tables.write_tables(workdir, config, list(store.classes), fold_records, t0, reporter)


__all__ = [
    'check_fold_dirs', 'check_paths', 'CheckpointMismatchError', 'CONFIG_JSON', 'finished_results',
    'NonFiniteLossError', 'PreemptedError', 'StaleRunError', 'train_and_evaluate', 'TRAIN_LOG',
    'WorkdirLockedError',
]
