"""Meta-training and evaluation of one method on one N-way K-shot setting.

Training draws batch `it` of the train split from (seed, 'train', it), so every method sees
the same episodes; the outer step is one jitted `meta.make_step`. Evaluation adapts
the meta-trained params to each test episode's support set with the method's own test-time
stages and scores the query images: accuracy is the mean over episodes of the per-episode
query accuracy, ci95 = 1.96 * std / sqrt(episodes) (in percent). Evaluation episodes depend
on (eval seed, split) only, so every method and training seed is scored on the same ones.

iMAML's solves are checked every step (`meta.solve_problems` on the step's metrics); a
failing step logs a warning (at most one per `implicit_warn_every` steps) and the run's info
counts them, with the mean CG residual and proximal-gradient ratio.
"""

import logging
import time
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mmtl_jax import meta
from mmtl_jax.fewshot import episodes
from mmtl_jax.fewshot.systems import Losses, System
from mmtl_jax.records import Params

# on_step(it, params, task_batch, rng): called before outer step `it` (diagnostics).
StepHook = Callable[[int, Params, Dict[str, np.ndarray], jax.Array], None]


def train(method: System, params: Params, alphabet: np.ndarray, classes: np.ndarray, *,
          way: int, shot: int, config: Any, progress: Optional[Any] = None,
          on_step: Optional[StepHook] = None, meta_batch: Optional[int] = None
          ) -> Tuple[Params, Dict[str, float]]:
  """config.train.iterations outer steps of `method` from `params`.

  Args:
    meta_batch: tasks per outer step (default config.train.meta_batch).
    progress: a `run.progress.Progress` whose current unit is this run (or None);
      update(iteration, loss=...) after each step.
    on_step: optional hook (diagnostics), its time not counted in s_per_iter.

  Returns:
    (params, info): info 'compile_s' (first step, compile included), 's_per_iter' (mean wall
    time of the later steps: episode sampling + jitted step, blocked until done; the first
    step's when there is only one), 'train_s', 'final_outer_loss'; for iMAML also
    'implicit': {'cg_residual_mean', 'cg_residual_max', 'prox_grad_ratio_mean',
    'failed_steps'} over all steps.
  """
  init_fn, step_fn = meta.make_step(method.spec, method.optimizer)
  state = init_fn(params)
  step = jax.jit(step_fn, donate_argnums=(0, 1))
  key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 1)
  tc = config.train
  tasks = int(tc.meta_batch if meta_batch is None else meta_batch)
  times, loss = [], float('nan')
  monitor = SolveMonitor(method.name, int(tc.get('implicit_warn_every', 50)))
  for it in range(int(tc.iterations)):
    batch = episodes.sample_tasks(alphabet, classes,
                                  episodes.episode_rng(int(config.seed), 'train', it),
                                  tasks=tasks, way=way, shot=shot,
                                  query=int(tc.query))
    rng = jax.random.fold_in(key, it)
    if on_step is not None:
      on_step(it, params, batch, rng)
    start = time.perf_counter()
    params, state, metrics = step(params, state, batch, rng)
    loss = float(jax.block_until_ready(metrics['outer_loss']))
    times.append(time.perf_counter() - start)
    monitor.check(it, metrics)
    if progress is not None:
      progress.update(it + 1, loss=loss)
  later = times[1:] or times
  info = {'compile_s': times[0] if times else 0.0,
          's_per_iter': float(np.mean(later)) if later else 0.0,
          'train_s': float(np.sum(times)), 'final_outer_loss': loss}
  if monitor.summary():
    info['implicit'] = monitor.summary()
  return params, info


class SolveMonitor:
  """Checks each step's iMAML solve metrics (`meta.solve_problems`), warns at most once per
  `warn_every` steps, and summarises them; silent for metrics without 'cg_residual'."""

  def __init__(self, name: str, warn_every: int):
    self.name, self.warn_every = name, warn_every
    self.solves, self.failed, self.last_warn = [], 0, None

  def check(self, it: int, metrics: Dict[str, Any]) -> None:
    if 'cg_residual' not in metrics:
      return
    solve = {k: float(metrics[k]) for k in ('cg_residual', 'prox_grad_ratio')}
    self.solves.append(solve)
    problems = meta.solve_problems(solve)
    self.failed += bool(problems)
    if problems and (self.last_warn is None or it - self.last_warn >= self.warn_every):
      logging.warning('%s step %d: %s', self.name, it, '; '.join(problems))
      self.last_warn = it

  def summary(self) -> Dict[str, Any]:
    """{'cg_residual_mean', 'cg_residual_max', 'prox_grad_ratio_mean', 'failed_steps',
    'steps'} over the checked steps ({} when none was checked)."""
    if not self.solves:
      return {}
    res = np.array([s['cg_residual'] for s in self.solves])
    return {'cg_residual_mean': float(res.mean()), 'cg_residual_max': float(res.max()),
            'prox_grad_ratio_mean': float(np.mean([s['prox_grad_ratio'] for s in self.solves])),
            'failed_steps': self.failed, 'steps': len(self.solves)}


def make_scorer(method: System, losses: Losses) -> Callable[..., jax.Array]:
  """jitted score(params, episodes, rng) -> query accuracy [E] of E episodes (leading axis),
  each adapted on its support set with method.eval_stages; episode e uses fold_in(rng, e)."""

  def one(params, episode, rng):
    adapted, _ = meta.adapt_stages(method.eval_stages(params), params, episode, rng)
    logits = losses.logits(adapted, episode['query_x'])
    return jnp.mean((jnp.argmax(logits, -1) == episode['query_y']).astype(jnp.float32))

  @jax.jit
  def score(params, batch, rng):
    n = jax.tree.leaves(batch)[0].shape[0]
    # Sequential over episodes: XLA:CPU runs a vmap over per-episode conv weights far slower.
    return jax.lax.map(lambda a: one(params, a[0], jax.random.fold_in(rng, a[1])),
                       (batch, jnp.arange(n)))

  return score


def evaluate(method: System, losses: Losses, params: Params, alphabet: np.ndarray,
             classes: np.ndarray, *, way: int, shot: int, eval_config: Any,
             split: str = 'test') -> Dict[str, Any]:
  """Accuracy of `method` at `params` over eval_config.episodes episodes of `classes`
  (`split`'s, seed eval_config.seed: the same episodes for every method)."""
  score = make_scorer(method, losses)
  return evaluate_with(lambda batch, i: np.asarray(score(params, batch, jax.random.PRNGKey(i))),
                       alphabet, classes, way=way, shot=shot, eval_config=eval_config,
                       split=split)


def evaluate_with(score: Callable[[Dict[str, np.ndarray], int], np.ndarray],
                  alphabet: np.ndarray, classes: np.ndarray, *, way: int, shot: int,
                  eval_config: Any, split: str = 'test') -> Dict[str, Any]:
  """score(task batch, chunk index) -> per-episode accuracies, over the evaluation episodes.

  Returns {'accuracy', 'ci95' (percent), 'episodes', 'per_episode' (list of fractions)}.
  """
  total, chunk = int(eval_config.episodes), int(eval_config.chunk)
  accs = []
  for i, start in enumerate(range(0, total, chunk)):
    batch = episodes.sample_tasks(alphabet, classes,
                                  episodes.episode_rng(int(eval_config.seed), split, i),
                                  tasks=min(chunk, total - start), way=way, shot=shot,
                                  query=int(eval_config.query))
    accs.append(np.asarray(score(batch, i), np.float64))
  accs = np.concatenate(accs)
  return {'accuracy': 100.0 * float(accs.mean()), 'ci95': ci95(accs), 'episodes': len(accs),
          'per_episode': accs.tolist()}


def ci95(values: np.ndarray) -> float:
  """1.96 * std / sqrt(n), in percent of fractions `values` (0 for fewer than 2 values)."""
  values = np.asarray(values, np.float64)
  if values.size < 2:
    return 0.0
  return float(100.0 * 1.96 * values.std() / np.sqrt(values.size))


__all__ = ['ci95', 'evaluate', 'evaluate_with', 'make_scorer', 'SolveMonitor', 'StepHook', 'train']
