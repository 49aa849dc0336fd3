"""The few-shot experiment: every seed x (way, shot) setting x method, one record each, and
the validation search that chose the methods' settings.

  records = run(config)['records']    # [{method, way, shot, seed, accuracy, ci95,
                                      #   per_episode, s_per_iter, peak_mem_mb, ...}]
  points = search(config)['points']   # [{method, way, shot, overrides, accuracy, ...}] on
                                      #   VALIDATION characters; search(...)['chosen']

Accuracy and ci95 are in percent (ACCURACY_UNIT). For one setting and seed every method
starts from the same initial network (key (seed, way, shot)) and sees the same training
episodes; test episodes depend on config.eval.seed only, so they are the same for every
method AND seed (paired comparisons are per episode). Baselines ('nearest_centroid',
'finetune') are scored on the same episodes.
"""

import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mmtl_jax import meta
from mmtl_jax.fewshot import baselines, episodes, glyphs, loop, report, systems
from mmtl_jax.fewshot.measure import PeakRSS
from mmtl_jax.models.conv4 import Conv4
from mmtl_jax.run import files
from mmtl_jax.run import progress as progress_lib
from mmtl_jax.run import runner

ACCURACY_UNIT = 'percent'

# make_hook(method_name, way, shot, method, losses) -> (loop.StepHook, finish() -> result)
HookFactory = Callable[..., Tuple[loop.StepHook, Callable[[], Any]]]


def settings_of(config: Any) -> List[Tuple[int, int]]:
  """[(way, shot)] from the paired config.ways / config.shots.

  Raises:
    ValueError: lists of different lengths, a value below 1, or shot + eval query or shot +
      train query above the samples per class.
  """
  ways, shots = [int(w) for w in config.ways], [int(s) for s in config.shots]
  if len(ways) != len(shots) or not ways:
    raise ValueError(f'ways and shots are paired: need equal non-empty lists, got {ways} and '
                     f'{shots}')
  if min(ways + shots) < 1:
    raise ValueError(f'ways and shots must be >= 1, got {ways} and {shots}')
  query = max(int(config.eval.query), int(config.train.query))
  for shot in shots:
    if shot + query > int(config.data.samples):
      raise ValueError(f'shot {shot} + query {query} exceeds the {config.data.samples} '
                       'samples per class')
  return list(zip(ways, shots))


def meta_batch_of(config: Any, way: int) -> int:
  """Tasks per outer step for `way`-way training: config.train.meta_batch_by_way's entry
  (pairs (way, tasks)) or config.train.meta_batch."""
  table = {int(w): int(t) for w, t in config.train.get('meta_batch_by_way', ())}
  return table.get(int(way), int(config.train.meta_batch))


def check_methods(names: Sequence[str]) -> List[str]:
  """The names, each a registered method or a baseline (ValueError listing the known ones
  otherwise)."""
  known = systems.SYSTEMS.names() + tuple(baselines.BASELINES)
  for name in names:
    if name not in known:
      raise ValueError(f'unknown few-shot method {name!r} (config.methods or --methods); '
                       f'known: {", ".join(known)}')
  return list(names)


def seeds_of(config: Any) -> List[int]:
  """The meta-training seeds: config.seed, config.seed + 1, ... (config.seeds of them)."""
  if int(config.get('seeds', 1)) < 1:
    raise ValueError(f'config.seeds must be >= 1, got {config.seeds}')
  return [int(config.seed) + i for i in range(int(config.get('seeds', 1)))]


def build_alphabet(data: Any) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
  """(alphabet uint8 [characters, samples, size, size], class splits)."""
  alphabet = glyphs.render_alphabet(int(data.num_characters), int(data.samples),
                                    int(data.size), int(data.seed), float(data.jitter),
                                    float(data.pen))
  return alphabet, episodes.split_classes(int(data.num_characters), tuple(data.split))


_NO_TRAINING = {'s_per_iter': 0.0, 'compile_s': 0.0, 'train_s': 0.0,
                'final_outer_loss': float('nan')}


def _network_run(name, way, shot, config, alphabet, splits, progress, make_hook, seed,
                 overrides, split, eval_config):
  """(result, train info, extra record fields, iterations) of a network-based method."""
  model = Conv4(way=way, channels=int(config.model.channels),
                downsample=str(config.model.get('downsample', 'stride')))
  image_shape = (int(config.data.size), int(config.data.size), 1)
  key = jax.random.fold_in(jax.random.PRNGKey(seed), way * 1000 + shot)
  cfg = systems.method_config(config, name, way)
  for field, value in (overrides or {}).items():
    cfg[field] = value
  run_config = config.copy_and_resolve_references()
  run_config.seed = seed
  net, batch_stats = systems.init_network(model, key, image_shape)
  losses = systems.make_losses(model, batch_stats)
  method = systems.build(name, cfg, losses, int(config.train.iterations))
  params = systems.method_params(method, net, cfg)
  hook, finish = make_hook(name, way, shot, method, losses) if make_hook else (None, None)
  info = dict(_NO_TRAINING)
  if method.meta_trained:
    params, info = loop.train(method, params, alphabet, splits['train'], way=way, shot=shot,
                              config=run_config, progress=progress, on_step=hook,
                              meta_batch=meta_batch_of(config, way))
  result = loop.evaluate(method, losses, params, alphabet, splits[split], way=way, shot=shot,
                         eval_config=eval_config, split=split)
  extra = {'settings': {k: cfg[k] for k in sorted(cfg.keys())}}
  if 'implicit' in info:
    extra['implicit'] = info['implicit']
  if finish is not None:
    extra['diagnostics'] = finish()
  return result, info, extra, int(config.train.iterations) if method.meta_trained else 0


def run_one(name: str, way: int, shot: int, config: Any, alphabet: np.ndarray,
            splits: Dict[str, np.ndarray], progress: Optional[Any] = None,
            make_hook: Optional[HookFactory] = None, *, seed: Optional[int] = None,
            overrides: Optional[Dict[str, Any]] = None, split: str = 'test',
            eval_config: Optional[Any] = None) -> Dict[str, Any]:
  """Meta-trains method `name` on `way`-way `shot`-shot (seed: config.seed by default, with
  the method's config plus `overrides`) and scores it on `split`'s episodes of eval_config
  (default config.eval); returns its record."""
  seed = int(config.seed if seed is None else seed)
  eval_config = config.eval if eval_config is None else eval_config
  with PeakRSS() as peak:
    if name in baselines.BASELINES:
      result = loop.evaluate_with(lambda batch, i: baselines.nearest_centroid(batch, way),
                                  alphabet, splits[split], way=way, shot=shot,
                                  eval_config=eval_config, split=split)
      info, extra, iterations = dict(_NO_TRAINING), {}, 0
    else:
      result, info, extra, iterations = _network_run(
          name, way, shot, config, alphabet, splits, progress, make_hook, seed, overrides,
          split, eval_config)
  record = {'method': name, 'way': way, 'shot': shot, 'seed': seed, 'split': split,
            'accuracy': result['accuracy'], 'ci95': result['ci95'],
            'accuracy_unit': ACCURACY_UNIT,
            'per_episode': [round(a, 4) for a in result['per_episode']],
            's_per_iter': info['s_per_iter'], 'peak_mem_mb': peak.peak_mb,
            'chance': 100.0 / way, 'iterations': iterations,
            'eval_episodes': result['episodes'], 'eval_seed': int(eval_config.seed),
            'meta_batch': meta_batch_of(config, way), 'compile_s': info['compile_s'],
            'train_s': info['train_s'], 'final_outer_loss': info['final_outer_loss'],
            'wall_s': peak.wall_s}
  record.update(extra)
  return record


def unit_config(config: Any, name: str, way: int, shot: int, eval_config: Any = None,
                overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """What decides the result of method `name` at `way`-way `shot`-shot (the seed is in the
  unit's key): its settings for that way (plus `overrides`), the alphabet, model, training
  and evaluation fields, the meta-batch. Display-only fields (train.report_every_s,
  train.implicit_warn_every) are left out, so changing them recomputes nothing."""
  train = {k: v for k, v in files.to_jsonable(config.train).items()
           if k not in ('report_every_s', 'implicit_warn_every')}
  method = ({} if name in baselines.BASELINES
            else files.to_jsonable(systems.method_config(config, name, way)))
  method.update(files.to_jsonable(overrides or {}))
  return files.to_jsonable({
      'method': method, 'data': config.data, 'model': config.model, 'train': train,
      'eval': config.eval if eval_config is None else eval_config,
      'meta_batch': meta_batch_of(config, way), 'shot': int(shot)})


def test_unit(config: Any, name: str, way: int, shot: int, seed: int) -> runner.Unit:
  """The table's unit: method `name`, `way`-way `shot`-shot, training seed `seed`, scored on
  the test characters."""
  return runner.Unit(
      name=f'{name} {way}-way {shot}-shot seed {seed}',
      key={'kind': 'test', 'method': name, 'way': int(way), 'shot': int(shot),
           'seed': int(seed)},
      config=unit_config(config, name, way, shot), steps=int(config.train.iterations))


def search_eval(config: Any) -> Any:
  """The validation episodes of the search: config.eval with the search's count and seed."""
  val_eval = config.eval.copy_and_resolve_references()
  val_eval.episodes = int(config.search.episodes)
  val_eval.seed = int(config.search.seed)
  return val_eval


def search_unit(config: Any, name: str, way: int, overrides: Dict[str, Any]) -> runner.Unit:
  """The search's unit: one grid point of method `name` at `way`-way (shot
  config.search.shot, seed config.seed), scored on validation episodes."""
  shot = int(config.search.shot)
  return runner.Unit(
      name=f'{name} {way}-way {overrides}',
      key={'kind': 'search', 'method': name, 'way': int(way),
           'overrides': files.to_jsonable(overrides)},
      config=dict(unit_config(config, name, way, shot, search_eval(config), overrides),
                  seed=int(config.seed)),
      steps=int(config.train.iterations))


def test_units(config: Any, method_names: Optional[Sequence[str]] = None
               ) -> List[runner.Unit]:
  """The table's units: seeds x settings x methods (method_names overrides config.methods),
  seeds outermost so that a stopped run has whole tables for its first seeds."""
  names = check_methods(method_names or tuple(config.methods))
  return [test_unit(config, name, way, shot, seed) for seed in seeds_of(config)
          for way, shot in settings_of(config) for name in names]


def search_units(config: Any, method_names: Optional[Sequence[str]] = None
                 ) -> List[runner.Unit]:
  """The search's units: ways x methods with a grid x grid points, in that order."""
  names = [n for n in check_methods(method_names or tuple(config.methods))
           if n in config.search.grid]
  return [search_unit(config, name, int(way), dict(o)) for way in config.search.ways
          for name in names for o in config.search.grid[name]]


class _Alphabet:
  """The alphabet, rendered on first use only: a rerun that reads every record back renders
  nothing."""

  def __init__(self, data: Any):
    self.data, self.value, self.render_s = data, None, 0.0

  def get(self) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    if self.value is None:
      start = time.perf_counter()
      self.value = build_alphabet(self.data)
      self.render_s = time.perf_counter() - start
    return self.value


def _progress(progress: Optional[Callable[..., Any]], what: str) -> Callable[[int, int], Any]:
  """The runner's progress from `progress(what, units, pending)`; silent without one."""
  if progress is None:
    return lambda units, pending: progress_lib.Progress(what, units, pending=pending,
                                                        enabled=False)
  return lambda units, pending: progress(what, units, pending)


def run(config: Any, method_names: Optional[Sequence[str]] = None,
        progress: Optional[Callable[..., Any]] = None,
        make_hook: Optional[HookFactory] = None,
        on_record: Optional[Callable[[List[Dict[str, Any]]], None]] = None,
        held: Optional[runner.Runner] = None) -> Dict[str, Any]:
  """All seeds x settings x methods of `config` (method_names overrides config.methods),
  seeds outermost so that a stopped run has whole tables for its first seeds.

  progress(what, units, pending) -> a `run.progress.Progress` (or None: silent): one unit per
    record, lines with ETAs in a log file, bars on a terminal.
  on_record(records so far): called after each record (e.g. to save partial results).
  held: an entered `run.runner.Runner` whose store keeps each record as it finishes and
    gives back those finished before (None: every record is computed, nothing is kept).
  Returns {'records': [...] (this call's units, in order), 'wall_s': total seconds,
  'render_s': alphabet seconds, 'classes': {split: number of classes}, 'accuracy_unit'}.
  """
  start = time.perf_counter()
  alphabet = _Alphabet(config.data)
  units = test_units(config, method_names)

  def compute(unit: runner.Unit, report: Any) -> Dict[str, Any]:
    k = unit.key
    return run_one(k['method'], k['way'], k['shot'], config, *alphabet.get(), report,
                   make_hook, seed=k['seed'])

  records = (held or runner.Runner(None)).run(
      units, compute, note=lambda r: f"test accuracy {r['accuracy']:.1f}%",
      on_record=on_record, make_progress=_progress(progress, 'record'))
  splits = episodes.split_classes(int(config.data.num_characters), tuple(config.data.split))
  return {'records': records, 'wall_s': time.perf_counter() - start,
          'render_s': alphabet.render_s, 'classes': {k: int(len(v)) for k, v in splits.items()},
          'accuracy_unit': ACCURACY_UNIT}


def table_order(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """Records in table order: setting, then baselines and systems in their registered order,
  then seed."""
  order = list(report.BASELINE_NAMES) + list(systems.SYSTEMS.names())  # index: first one
  rank = lambda name: order.index(name) if name in order else len(order)
  return sorted(records, key=lambda r: (int(r['way']), int(r['shot']), rank(r['method']),
                                        r['method'], r['seed']))


def merge_records(runs: Sequence[Sequence[Dict[str, Any]]]
                  ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
  """(kept, dropped) records of several runs, later runs winning: per (method, way, shot)
  only records with the latest run's settings are kept, and per seed the latest record.
  Kept records come in table order (setting, then baselines and systems in their
  registered order, then seed), whatever order the runs came in."""
  latest: Dict[Tuple[Any, ...], Any] = {}
  for recs in runs:
    for r in recs:
      latest[(r['method'], r['way'], r['shot'])] = r.get('settings')
  chosen: Dict[Tuple[Any, ...], Dict[str, Any]] = {}
  dropped = []
  for recs in runs:
    for r in recs:
      key = (r['method'], r['way'], r['shot'])
      if r.get('settings') != latest[key]:
        dropped.append(r)
        continue
      if key + (r['seed'],) in chosen:
        dropped.append(chosen[key + (r['seed'],)])
      chosen[key + (r['seed'],)] = r
  return table_order(list(chosen.values())), dropped


def search(config: Any, method_names: Optional[Sequence[str]] = None,
           progress: Optional[Callable[..., Any]] = None,
           on_point: Optional[Callable[[List[Dict[str, Any]]], None]] = None,
           held: Optional[runner.Runner] = None) -> Dict[str, Any]:
  """The validation search: for each way in config.search.ways (shot config.search.shot) and
  each method with a grid in config.search.grid, one run per grid point (the method's
  config for that way plus the point's overrides; seed config.seed), scored on
  config.search.episodes episodes of the VALIDATION characters. Test characters are never
  touched. `held`: as in `run` (points finished before are read back). Returns {'points':
  records with 'overrides', 'chosen': {method: {'way<w>': {'overrides', 'accuracy'}}},
  'accuracy_unit'}; ties keep the earlier grid point.
  """
  alphabet = _Alphabet(config.data)
  units = search_units(config, method_names)

  def compute(unit: runner.Unit, report: Any) -> Dict[str, Any]:
    k = unit.key
    record = run_one(k['method'], k['way'], int(config.search.shot), config, *alphabet.get(),
                     report, seed=int(config.seed), overrides=k['overrides'], split='val',
                     eval_config=search_eval(config))
    record['overrides'] = k['overrides']
    return record

  points = (held or runner.Runner(None)).run(
      units, compute, note=lambda r: f"validation accuracy {r['accuracy']:.1f}%",
      on_record=on_point, make_progress=_progress(progress, 'grid point'))
  return {'points': points, 'chosen': choose(points), 'accuracy_unit': ACCURACY_UNIT}


def choose(points: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
  """The best validation point per method and way (the first of equal ones)."""
  chosen: Dict[str, Dict[str, Any]] = {}
  for p in points:
    slot = chosen.setdefault(p['method'], {})
    key = f"way{p['way']}"
    if key not in slot or p['accuracy'] > slot[key]['accuracy']:
      slot[key] = {'overrides': p['overrides'], 'accuracy': p['accuracy'], 'ci95': p['ci95']}
  return chosen


def meta_gradient_memory(config: Any, names: Sequence[str] = ('maml', 'imaml'),
                         steps: Sequence[int] = (1, 5, 10, 20), way: int = 5,
                         shot: int = 1) -> List[Dict[str, Any]]:
  """Memory of one compiled meta-gradient against the inner steps (Rajeswaran et al.'s claim:
  iMAML's is flat in the steps, MAML's grows with them).

  For each method and step count: the 5-way method config with `steps` inner steps as ONE
  looped stage (lax.scan, so the program size does not grow with the steps), the network
  and meta-batch of `config`; XLA's own figure for the compiled program's temporary buffers
  (compiled.memory_analysis().temp_size_in_bytes), which is what grows with the stored
  inner trajectory. Returns [{'method', 'steps', 'temp_mb'}].
  """
  model = Conv4(way=way, channels=int(config.model.channels),
                downsample=str(config.model.downsample))
  size = int(config.data.size)
  net, batch_stats = systems.init_network(model, jax.random.PRNGKey(0), (size, size, 1))
  losses = systems.make_losses(model, batch_stats)
  tasks, query = int(config.train.meta_batch), int(config.train.query)
  batch = {'support_x': jnp.zeros((tasks, way * shot, size, size, 1)),
           'support_y': jnp.zeros((tasks, way * shot), jnp.int32),
           'query_x': jnp.zeros((tasks, way * query, size, size, 1)),
           'query_y': jnp.zeros((tasks, way * query), jnp.int32)}
  out = []
  for name in names:
    cfg = systems.method_config(config, name, way)
    base = systems.build(name, cfg, losses, 1).spec
    for n in steps:
      stage = meta.Stage(systems.NET, losses.support, steps=int(n), lr=float(cfg.lr))
      spec = dataclasses.replace(base, stages=(stage,))
      fn = jax.jit(lambda p, b, r, spec=spec: meta.meta_gradient(spec, p, b, r).grads)
      compiled = fn.lower(net, batch, jax.random.PRNGKey(0)).compile()
      temp = compiled.memory_analysis().temp_size_in_bytes
      out.append({'method': name, 'steps': int(n), 'temp_mb': temp / 2 ** 20})
  return out


__all__ = [
    'ACCURACY_UNIT', 'build_alphabet', 'check_methods', 'choose', 'HookFactory', 'merge_records',
    'meta_batch_of', 'meta_gradient_memory', 'run', 'run_one', 'search', 'search_eval',
    'search_unit', 'search_units', 'seeds_of', 'settings_of', 'table_order', 'test_unit',
    'test_units', 'unit_config',
]
