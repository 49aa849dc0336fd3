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


def run(config: Any, method_names: Optional[Sequence[str]] = None,
        progress: Optional[Callable[..., Any]] = None,
        make_hook: Optional[HookFactory] = None,
        on_record: Optional[Callable[[List[Dict[str, Any]]], None]] = None,
        done: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
  """All seeds x settings x methods of `config` (method_names overrides config.methods),
  seeds outermost so that a stopped run has whole tables for its first seeds.

  progress(what, units, pending) -> a `run.progress.Progress` (or None: silent): one unit per
    record, lines with ETAs in a log file, bars on a terminal.
  on_record(records so far): called after each record (e.g. to save partial results).
  done: records of an earlier, interrupted run of the same config; their (method, way, shot,
    seed) are not run again.
  Returns {'records': [...], 'wall_s': total seconds, 'render_s': alphabet seconds,
  'classes': {split: number of classes}, 'accuracy_unit'}.
  """
  names = check_methods(method_names or tuple(config.methods))
  settings, seeds = settings_of(config), seeds_of(config)
  start = time.perf_counter()
  alphabet, splits = build_alphabet(config.data)
  render_s = time.perf_counter() - start
  records = list(done)
  finished = {(r['method'], r['way'], r['shot'], r['seed']) for r in records}
  units = [(seed, way, shot, name) for seed in seeds for way, shot in settings
           for name in names]
  todo = [u for u in units if (u[3], u[1], u[2], u[0]) not in finished]
  report = progress('record', len(units), len(todo)) if progress else None
  for seed, way, shot, name in units:
    unit = f'{name} {way}-way {shot}-shot seed {seed}'
    if (name, way, shot, seed) in finished:
      if report:
        report.read_back(unit)
      continue
    if report:
      report.start(unit, int(config.train.iterations))
    records.append(run_one(name, way, shot, config, alphabet, splits, report, make_hook,
                           seed=seed))
    if report:
      report.finish(f"test accuracy {records[-1]['accuracy']:.1f}%")
    if on_record is not None:
      on_record(records)
  if report:
    report.close()
  return {'records': records, 'wall_s': time.perf_counter() - start, 'render_s': render_s,
          'classes': {k: int(len(v)) for k, v in splits.items()},
          'accuracy_unit': ACCURACY_UNIT}


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
  order = list(report.BASELINE_NAMES) + list(systems.SYSTEMS.names())  # index: first one
  rank = lambda name: order.index(name) if name in order else len(order)
  kept = sorted(chosen.values(), key=lambda r: (int(r['way']), int(r['shot']),
                                                rank(r['method']), r['method'], r['seed']))
  return kept, dropped


def search(config: Any, method_names: Optional[Sequence[str]] = None,
           progress: Optional[Callable[..., Any]] = None,
           on_point: Optional[Callable[[List[Dict[str, Any]]], None]] = None,
           done: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
  """The validation search: for each way in config.search.ways (shot config.search.shot) and
  each method with a grid in config.search.grid, one run per grid point (the method's
  config for that way plus the point's overrides; seed config.seed), scored on
  config.search.episodes episodes of the VALIDATION characters. Test characters are never
  touched. Returns {'points': records with 'overrides', 'chosen': {method: {'way<w>':
  {'overrides', 'accuracy'}}}, 'accuracy_unit'}; ties keep the earlier grid point.
  """
  names = [n for n in check_methods(method_names or tuple(config.methods))
           if n in config.search.grid]
  alphabet, splits = build_alphabet(config.data)
  val_eval = config.eval.copy_and_resolve_references()
  val_eval.episodes = int(config.search.episodes)
  val_eval.seed = int(config.search.seed)
  shot = int(config.search.shot)
  points = list(done)
  units = [(int(way), name, dict(o)) for way in config.search.ways for name in names
           for o in config.search.grid[name]]
  is_done = lambda way, name, o: any(
      p['method'] == name and p['way'] == way and p['overrides'] == o for p in points)
  todo = [u for u in units if not is_done(*u)]
  report = progress('grid point', len(units), len(todo)) if progress else None
  for way, name, overrides in units:
    unit = f'{name} {way}-way {overrides}'
    if is_done(way, name, overrides):
      if report:
        report.read_back(unit)
      continue
    if report:
      report.start(unit, int(config.train.iterations))
    record = run_one(name, way, shot, config, alphabet, splits, report, seed=int(config.seed),
                     overrides=overrides, split='val', eval_config=val_eval)
    record['overrides'] = overrides
    points.append(record)
    if report:
      report.finish(f"validation accuracy {record['accuracy']:.1f}%")
    if on_point is not None:
      on_point(points)
  if report:
    report.close()
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
