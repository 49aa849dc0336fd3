"""The six meta-learners compared on glyphs, as stage specs of the meta library
(`mmtl_jax.meta`). Like the SER layer's `mmtl_jax.ser.systems`, they are "systems": named,
registered learners that one experiment trains and evaluates side by side.

Params are named groups {'body': conv0..conv3 and bn0..bn3, 'head': the Dense layer} (plus
'lr' for Meta-SGD's learned rates), so that ANIL can adapt the head alone:

  maml      SGD steps on (body, head), mode 'exact' (Finn et al. 2017)
  fomaml    the same, mode 'first_order'
  reptile   SGD steps on (body, head) over support AND query images (Nichol et al. 2018);
            outer SGD step eps (1 -> 0) along mean(adapted - params)
  imaml     one multi-step SGD stage on (body, head) solving the proximal problem (or, with
            pull_back, plain steps then one pull-back step), mode 'implicit' (Rajeswaran et
            al. 2019; lambda, CG steps and the damped system from cfg)
  meta_sgd  steps on (body, head) with a learned rate per parameter entry ('lr' group),
            mode 'exact' (Li et al. 2017)
  anil      SGD steps on 'head' only, mode 'exact' (Raghu et al. 2020)
  finetune  a baseline: no meta-training; the randomly initialised network is fine-tuned on
            each test episode's support set (eval_steps SGD steps of lr)

Training specs come from `meta.recipes`, one stage each with `unroll=True` (straight-line
steps); test-time adaptation is unrolled one-step stages (see `unrolled`).
BatchNorm is transductive, as in Finn et al.'s code: every forward pass (inner steps, outer
loss, evaluation) normalises with the statistics of the images it is given and running
averages are never used, so the losses take no model state. `SYSTEMS` maps a name to a
builder `(method_config, losses, iterations) -> System`; register one to add a system
(listed in config.methods).
"""

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from mmtl_jax import meta
from mmtl_jax.models.conv4 import Conv4
from mmtl_jax.registry import Registry
from mmtl_jax.records import Params

Loss = Callable[[Params, Any, jax.Array], jax.Array]
NET = ('body', 'head')


@dataclasses.dataclass(frozen=True)
class Losses:
  """Per-task losses over params {'body', 'head', ...} (batch: one episode, no task axis).

  support, query, both: mean cross-entropy on the support, query, or all images.
  logits(params, x): [N, way] logits of images x [N, H, W, 1] (transductive BatchNorm).
  """

  support: Loss
  query: Loss
  both: Loss
  logits: Callable[[Params, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class System:
  """A meta-learner: its meta-update, outer optimiser and test-time adaptation.

  spec: the `meta.MetaSpec` of one meta-iteration.
  optimizer: the outer optax transformation over params groups.
  eval_stages: params -> the stages that adapt params to a test episode's support set.
  learned_lr: whether params hold a learned-rate group 'lr'.
  meta_trained: False for baselines that skip meta-training (spec and optimizer unused).
  """

  name: str
  spec: Optional[meta.MetaSpec]
  optimizer: Optional[optax.GradientTransformation]
  eval_stages: Callable[[Params], Tuple[meta.Stage, ...]]
  learned_lr: bool = False
  meta_trained: bool = True


SYSTEMS: Registry[Callable[..., System]] = Registry('few-shot system', 'config.methods')


def to_groups(variables_params: Dict[str, Any]) -> Params:
  """Flax params of `Conv4` -> {'body': all but the head, 'head': the Dense layer}."""
  body = {k: v for k, v in variables_params.items() if k != 'head'}
  return {'body': body, 'head': variables_params['head']}


def make_losses(model: Conv4, batch_stats: Any) -> Losses:
  """Cross-entropy losses of `model` with transductive BatchNorm (batch_stats are only a
  placeholder that flax updates and we drop)."""

  def logits(params, x):
    variables = {'params': {**params['body'], 'head': params['head']},
                 'batch_stats': batch_stats}
    out, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
    return out

  def xent(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()

  def both(params, batch, rng):
    del rng
    x = jnp.concatenate([batch['support_x'], batch['query_x']])
    return xent(params, x, jnp.concatenate([batch['support_y'], batch['query_y']]))

  return Losses(support=lambda p, b, r: xent(p, b['support_x'], b['support_y']),
                query=lambda p, b, r: xent(p, b['query_x'], b['query_y']),
                both=both, logits=logits)


def unrolled(group: Any, loss: Loss, steps: int, **rule: Any) -> Tuple[meta.Stage, ...]:
  """`steps` one-step stages of the same plain-SGD or learned-rate rule: the same updates as
  Stage(group, loss, steps=steps, **rule) (the losses ignore their key), traced as
  straight-line code. A stage of several steps is a lax.scan, and XLA:CPU runs convolutions
  inside a loop body about 10x slower than outside one (25 vs 340 ms for 5 steps of a
  16-channel Conv4 on 30 images), so the few-shot methods unroll their inner loops."""
  return tuple(meta.Stage(group, loss, steps=1, name=f'inner{i}', **rule) for i in range(steps))


def _fixed(stages: Tuple[meta.Stage, ...]):
  """eval_stages for methods whose test-time stages do not depend on params."""
  return lambda params: stages


def _adam(cfg: Any) -> optax.GradientTransformation:
  return optax.adam(float(cfg.outer_lr))


@SYSTEMS.register('maml')
def maml(cfg: Any, losses: Losses, iterations: int, mode: str = 'exact') -> System:
  spec = meta.recipes.maml(losses.support, losses.query, groups=NET, steps=int(cfg.steps),
                           lr=float(cfg.lr), mode=mode, strategy=str(cfg.strategy),
                           unroll=True)
  opt = meta.group_optimizer({'body': _adam(cfg), 'head': _adam(cfg)})
  return System('maml' if mode == 'exact' else 'fomaml', spec, opt,
                _fixed(unrolled(NET, losses.support, int(cfg.eval_steps), lr=float(cfg.lr))))


@SYSTEMS.register('fomaml')
def fomaml(cfg: Any, losses: Losses, iterations: int) -> System:
  return maml(cfg, losses, iterations, mode='first_order')


@SYSTEMS.register('reptile')
def reptile(cfg: Any, losses: Losses, iterations: int) -> System:
  """Nichol et al.'s Reptile with plain SGD inner steps on all of the task's images (their
  Omniglot runs used Adam; an optax optimiser's state would need one multi-step, i.e. looped,
  stage); the outer step params += eps * mean(adapted - params), eps annealed linearly from
  outer_lr to 0. Test time: eval_steps SGD steps on the support set."""
  spec = meta.recipes.reptile(losses.both, losses.query, groups=NET, steps=int(cfg.steps),
                              lr=float(cfg.lr), strategy=str(cfg.strategy), unroll=True)
  eps = optax.linear_schedule(float(cfg.outer_lr), 0.0, max(int(iterations), 1))
  opt = meta.group_optimizer({'body': optax.sgd(eps), 'head': optax.sgd(eps)})
  return System('reptile', spec, opt,
                _fixed(unrolled(NET, losses.support, int(cfg.eval_steps), lr=float(cfg.lr))))


@SYSTEMS.register('imaml')
def imaml(cfg: Any, losses: Losses, iterations: int) -> System:
  """`meta.recipes.imaml`: one stage, unrolled (Stage.unroll) because XLA:CPU runs
  convolutions in a loop body far slower. cfg: steps, lr, lam, cg_steps, cg_damping and
  cg_lam_damping (the damped system: the estimator's damping and lam_damping), pull_back,
  test_adapt: 'plain' (eval_steps SGD steps on the support loss, as the iMAML authors' code
  evaluates) or 'proximal' (the same proximal problem as in training, around the
  meta-params)."""
  lam = float(cfg.lam)
  spec = meta.recipes.imaml(losses.support, losses.query, groups=NET, steps=int(cfg.steps),
                            lr=float(cfg.lr), lam=lam, cg_steps=int(cfg.cg_steps),
                            damping=float(cfg.cg_damping),
                            lam_damping=float(cfg.cg_lam_damping),
                            pull_back=bool(cfg.pull_back), strategy=str(cfg.strategy),
                            unroll=True)
  opt = meta.group_optimizer({'body': _adam(cfg), 'head': _adam(cfg)})
  test = unrolled(NET, losses.support, int(cfg.eval_steps), lr=float(cfg.lr))
  if str(cfg.test_adapt) not in ('plain', 'proximal'):
    raise ValueError(f"imaml test_adapt must be 'plain' or 'proximal', got {cfg.test_adapt!r}")
  if str(cfg.test_adapt) == 'plain':
    return System('imaml', spec, opt, _fixed(test))

  def eval_stages(params):
    center = {g: params[g] for g in NET}
    return tuple(meta.proximal_stage(s, center, lam) for s in test)

  return System('imaml', spec, opt, eval_stages)


@SYSTEMS.register('meta_sgd')
def meta_sgd(cfg: Any, losses: Losses, iterations: int) -> System:
  """Rates (params['lr'], one per entry of body and head, initialised to cfg.lr) are
  meta-trained with Adam at cfg.rate_outer_lr; every inner step uses the same rates."""
  stages = lambda steps: unrolled(NET, losses.support, steps, learned_lr='lr')
  spec = meta.recipes.meta_sgd(losses.support, losses.query, groups=NET, rates='lr',
                               steps=int(cfg.steps), strategy=str(cfg.strategy), unroll=True)
  opt = meta.group_optimizer({'body': _adam(cfg), 'head': _adam(cfg),
                              'lr': optax.adam(float(cfg.rate_outer_lr))})
  return System('meta_sgd', spec, opt, _fixed(stages(int(cfg.eval_steps))), learned_lr=True)


@SYSTEMS.register('anil')
def anil(cfg: Any, losses: Losses, iterations: int) -> System:
  stages = lambda steps: unrolled('head', losses.support, steps, lr=float(cfg.lr))
  spec = meta.recipes.anil(losses.support, losses.query, head='head', steps=int(cfg.steps),
                           lr=float(cfg.lr), strategy=str(cfg.strategy), unroll=True)
  opt = meta.group_optimizer({'body': _adam(cfg), 'head': _adam(cfg)})
  return System('anil', spec, opt, _fixed(stages(int(cfg.eval_steps))))


@SYSTEMS.register('finetune')
def finetune(cfg: Any, losses: Losses, iterations: int) -> System:
  """The non-meta-trained baseline: the initial network, adapted per test episode."""
  return System('finetune', None, None,
                _fixed(unrolled(NET, losses.support, int(cfg.eval_steps), lr=float(cfg.lr))),
                meta_trained=False)


def method_config(config: Any, name: str, way: int) -> Any:
  """config.method[name] with config.by_way['way<way>'][name]'s fields on top (a copy)."""
  cfg = config.method[name].copy_and_resolve_references()
  override = config.get('by_way', {}).get(f'way{int(way)}', {}).get(name, {})
  for field, value in dict(override).items():
    if field not in cfg:
      raise ValueError(f'by_way.way{way}.{name}.{field}: {name} has no field {field!r}')
    cfg[field] = value
  return cfg


def init_network(model: Conv4, rng: jax.Array, image_shape: Tuple[int, ...]
                 ) -> Tuple[Params, Any]:
  """(params groups {'body', 'head'}, the model's batch_stats placeholder)."""
  variables = model.init(rng, jnp.zeros((2,) + tuple(image_shape)), train=True)
  return to_groups(variables['params']), variables['batch_stats']


def method_params(method: System, net: Params, cfg: Any) -> Params:
  """The params `method` trains: the network groups, plus for Meta-SGD an 'lr' group that
  mirrors (body, head) and starts at cfg.lr everywhere."""
  params = dict(net)
  if method.learned_lr:
    params['lr'] = meta.meta_sgd_rates({g: net[g] for g in NET}, float(cfg.lr))
  return params


def build(name: str, cfg: Any, losses: Losses, iterations: int) -> System:
  """The method `name` (a SYSTEMS entry) from its config block.

  Raises:
    ValueError: an unknown name (listing the registered ones).
  """
  return SYSTEMS.get(name)(cfg, losses, iterations)


__all__ = [
    'anil', 'build', 'finetune', 'fomaml', 'imaml', 'init_network', 'Loss', 'Losses',
    'make_losses', 'maml', 'meta_sgd', 'method_config', 'method_params', 'NET', 'reptile',
    'System', 'SYSTEMS', 'to_groups', 'unrolled',
]
