"""Few-shot sinusoid regression (Finn et al. 2017, 5.1): the meta package on a second domain.

A task is y = A sin(x - p), A ~ U[0.1, 5], p ~ U[0, pi], x ~ U[-5, 5]. The model is a
1-40-40-1 ReLU MLP whose params are the group 'theta', meta-trained by `meta.recipes.maml`
(any mode): the inner loss is the MSE on K support points, the outer loss the MSE on the
query points.
Everything is sampled on device inside the jitted training scan.
"""

import time
from typing import Any, Callable, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mmtl_jax import meta


class MLP(nn.Module):
  """[N, 1] -> [N, 1] with ReLU hidden layers."""

  hidden: Sequence[int] = (40, 40)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(1)(x)


def sample_tasks(rng: jax.Array, num_tasks: int, num_points: Dict[str, int],
                 task_config: Any) -> Dict[str, jax.Array]:
  """Tasks with named point sets, e.g. {'support': 10, 'query': 10}.

  Returns {'<name>_x': [num_tasks, n, 1], '<name>_y': [num_tasks, n, 1], 'amplitude',
  'phase': [num_tasks]}; all sets of a task share its amplitude and phase.
  """
  k_amp, k_phase, k_x = jax.random.split(rng, 3)
  amp = jax.random.uniform(k_amp, (num_tasks,), minval=task_config.amplitude[0],
                           maxval=task_config.amplitude[1])
  phase = jax.random.uniform(k_phase, (num_tasks,), minval=task_config.phase[0],
                             maxval=task_config.phase[1])
  out = {'amplitude': amp, 'phase': phase}
  for i, (name, n) in enumerate(sorted(num_points.items())):
    x = jax.random.uniform(jax.random.fold_in(k_x, i), (num_tasks, n, 1),
                           minval=task_config.x[0], maxval=task_config.x[1])
    out[f'{name}_x'] = x
    out[f'{name}_y'] = amp[:, None, None] * jnp.sin(x - phase[:, None, None])
  return out


def make_losses(model: MLP) -> Tuple[Callable, Callable]:
  """MSE on the support set (the inner loss) and on the query set (the outer loss), both
  over params {'theta': MLP params}."""

  def mse(params, x, y):
    return jnp.mean((model.apply({'params': params['theta']}, x) - y) ** 2)

  def support_loss(params, batch, rng):
    del rng
    return mse(params, batch['support_x'], batch['support_y'])

  def query_loss(params, batch, rng):
    del rng
    return mse(params, batch['query_x'], batch['query_y'])

  return support_loss, query_loss


def _spec(config: Any, mode: str, losses: Tuple[Callable, Callable]) -> meta.MetaSpec:
  m = config.meta
  return meta.recipes.maml(*losses, groups='theta', steps=int(m.inner_steps),
                           lr=float(m.alpha), mode=mode, strategy=str(m.strategy),
                           task_chunk=int(m.task_chunk), remat=bool(m.remat))


def train(config: Any, mode: str, theta: Any) -> Tuple[Any, Dict[str, float]]:
  """Trains theta by the meta-update `mode`, or by joint regression if mode == 'pretrained'.

  Returns (theta, info) with the last step's loss and the wall time.
  """
  model = MLP(tuple(config.model.hidden))
  losses = make_losses(model)
  points = {'support': config.task.k_support, 'query': config.task.k_query}
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)  # training task stream
  params = {'theta': theta}
  if mode == 'pretrained':
    optimizer = optax.adam(config.meta.gamma)

    def joint_loss(p, tasks):  # all points of all tasks, one regression problem
      x = jnp.concatenate([tasks['support_x'], tasks['query_x']], axis=1)
      y = jnp.concatenate([tasks['support_y'], tasks['query_y']], axis=1)
      return jnp.mean((jax.vmap(lambda xi: model.apply({'params': p['theta']}, xi))(x) - y) ** 2)

    def step_fn(p, opt_state, tasks, rng):
      del rng
      loss, grads = jax.value_and_grad(joint_loss)(p, tasks)
      updates, opt_state = optimizer.update(grads, opt_state, p)
      return optax.apply_updates(p, updates), opt_state, {'outer_loss': loss}

    opt_state = optimizer.init(params)
  else:
    init_fn, step_fn = meta.make_step(
        _spec(config, mode, losses), meta.group_optimizer({'theta': optax.adam(config.meta.gamma)}))
    opt_state = init_fn(params)

  @jax.jit
  def run_chunk(p, opt_state, first_step):
    def body(carry, step):
      p, opt_state = carry
      rng = jax.random.fold_in(key, step)
      tasks = sample_tasks(jax.random.fold_in(rng, 0), config.train.meta_batch, points,
                           config.task)
      p, opt_state, metrics = step_fn(p, opt_state, tasks, jax.random.fold_in(rng, 1))
      return (p, opt_state), metrics['outer_loss']

    steps = first_step + jnp.arange(config.train.steps_per_call)
    return jax.lax.scan(body, (p, opt_state), steps)

  start, done, losses = time.perf_counter(), 0, jnp.zeros(0)
  while done < config.train.steps:
    (params, opt_state), losses = run_chunk(params, opt_state, done)
    done += config.train.steps_per_call
  losses.block_until_ready()
  return params['theta'], {'steps': done, 'final_loss': float(losses[-1]),
                           'train_s': time.perf_counter() - start}


def evaluate(config: Any, theta: Any) -> Dict[str, float]:
  """MSE on held-out tasks before and after `adapt_steps` SGD steps (alpha) on K points."""
  model = MLP(tuple(config.model.hidden))
  support_loss, _ = make_losses(model)
  tasks = sample_tasks(jax.random.PRNGKey(config.eval.seed), config.eval.tasks,
                       {'support': config.task.k_support, 'query': config.eval.query_points},
                       config.task)

  def one(task):
    mse = lambda t: jnp.mean((model.apply({'params': t}, task['query_x']) - task['query_y']) ** 2)
    adapted = theta
    for _ in range(config.eval.adapt_steps):
      grads = jax.grad(support_loss)({'theta': adapted}, task, None)['theta']
      adapted = jax.tree.map(lambda p, g: p - config.meta.alpha * g, adapted, grads)
    return mse(theta), mse(adapted)

  before, after = jax.jit(jax.vmap(one))(tasks)
  ci = lambda v: float(1.96 * jnp.std(v) / jnp.sqrt(v.shape[0]))
  return {'mse_before': float(before.mean()), 'mse_after': float(after.mean()),
          'mse_after_ci95': ci(after)}


def run(config: Any) -> Dict[str, Dict[str, float]]:
  """Trains every mode of config.meta.modes (and the baseline) from the same init; evaluates."""
  model = MLP(tuple(config.model.hidden))
  theta0 = model.init(jax.random.PRNGKey(config.seed), jnp.zeros((1, 1)))['params']
  modes = list(config.meta.modes) + (['pretrained'] if config.train.baseline else [])
  results = {'init': evaluate(config, theta0)}
  for mode in modes:
    theta, info = train(config, mode, theta0)
    results[mode] = dict(evaluate(config, theta), **info)
  return results


__all__ = ['evaluate', 'make_losses', 'MLP', 'run', 'sample_tasks', 'train']
