"""The few-shot experiment: every method x (way, shot) setting, one record each.

  records = run(config)['records']    # [{method, way, shot, accuracy, ci95, s_per_iter,
                                      #   peak_mem_mb, ...}], accuracy and ci95 in percent

For one setting every method starts from the same initial network (key (seed, way, shot))
and sees the same training and test episodes.
"""

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from mmtl_jax.fewshot import episodes, glyphs, loop, systems
from mmtl_jax.fewshot.measure import PeakRSS
from mmtl_jax.models.conv4 import Conv4

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
  """The names, each a registered method (ValueError listing the known ones otherwise)."""
  for name in names:
    systems.SYSTEMS.get(name)
  return list(names)


def build_alphabet(data: Any) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
  """(alphabet uint8 [characters, samples, size, size], class splits)."""
  alphabet = glyphs.render_alphabet(int(data.num_characters), int(data.samples),
                                    int(data.size), int(data.seed), float(data.jitter),
                                    float(data.pen))
  return alphabet, episodes.split_classes(int(data.num_characters), tuple(data.split))


def run_one(name: str, way: int, shot: int, config: Any, alphabet: np.ndarray,
            splits: Dict[str, np.ndarray], progress: Optional[Any] = None,
            make_hook: Optional[HookFactory] = None) -> Dict[str, Any]:
  """Meta-trains and evaluates method `name` on `way`-way `shot`-shot; returns its record."""
  model = Conv4(way=way, channels=int(config.model.channels))
  image_shape = (int(config.data.size), int(config.data.size), 1)
  key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), way * 1000 + shot)
  cfg = config.method[name]
  with PeakRSS() as peak:
    net, batch_stats = systems.init_network(model, key, image_shape)
    losses = systems.make_losses(model, batch_stats)
    method = systems.build(name, cfg, losses, int(config.train.iterations))
    params = systems.method_params(method, net, cfg)
    hook, finish = make_hook(name, way, shot, method, losses) if make_hook else (None, None)
    params, info = loop.train(method, params, alphabet, splits['train'], way=way, shot=shot,
                              config=config, progress=progress, on_step=hook,
                              meta_batch=meta_batch_of(config, way))
    result = loop.evaluate(method, losses, params, alphabet, splits['test'], way=way,
                           shot=shot, eval_config=config.eval)
  record = {'method': name, 'way': way, 'shot': shot, 'accuracy': result['accuracy'],
            'ci95': result['ci95'], 's_per_iter': info['s_per_iter'],
            'peak_mem_mb': peak.peak_mb, 'chance': 100.0 / way,
            'iterations': int(config.train.iterations), 'eval_episodes': result['episodes'],
            'meta_batch': meta_batch_of(config, way),
            'compile_s': info['compile_s'], 'train_s': info['train_s'],
            'final_outer_loss': info['final_outer_loss'], 'wall_s': peak.wall_s}
  if finish is not None:
    record['diagnostics'] = finish()
  return record


def run(config: Any, method_names: Optional[Sequence[str]] = None,
        progress_factory: Optional[Callable[..., Any]] = None,
        make_hook: Optional[HookFactory] = None,
        on_record: Optional[Callable[[List[Dict[str, Any]]], None]] = None) -> Dict[str, Any]:
  """All methods x settings of `config` (method_names overrides config.methods).

  progress_factory(total=..., desc=...) -> a tqdm-like bar per record (or None: silent).
  on_record(records so far): called after each record (e.g. to save partial results).
  Returns {'records': [...], 'wall_s': total seconds, 'render_s': alphabet seconds,
  'classes': {split: number of classes}}.
  """
  names = check_methods(method_names or tuple(config.methods))
  settings = settings_of(config)
  start = time.perf_counter()
  alphabet, splits = build_alphabet(config.data)
  render_s = time.perf_counter() - start
  records = []
  for way, shot in settings:
    for name in names:
      bar = None
      if progress_factory is not None:
        bar = progress_factory(total=int(config.train.iterations),
                               desc=f'{name} {way}-way {shot}-shot')
      records.append(run_one(name, way, shot, config, alphabet, splits, bar, make_hook))
      if bar is not None:
        bar.set_postfix(acc=f"{records[-1]['accuracy']:.1f}%")
        bar.close()
      if on_record is not None:
        on_record(records)
  return {'records': records, 'wall_s': time.perf_counter() - start, 'render_s': render_s,
          'classes': {k: int(len(v)) for k, v in splits.items()}}
