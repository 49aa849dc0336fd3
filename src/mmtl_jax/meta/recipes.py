"""The usual meta-learners as `MetaSpec`s, each a few lines over `Stage` (as optax's alias.py
builds `adam` from transforms).

  spec = recipes.maml(support_loss, query_loss, groups=('body', 'head'), steps=5, lr=0.01)
  init_fn, step_fn = make_step(spec, group_optimizer({'body': optax.adam(1e-3),
                                                      'head': optax.adam(1e-3)}))

Every recipe takes the loss contracts of meta/spec.py: support_loss(params, batch, rng) (or
with model state), the inner loss, and query_loss, the outer loss at the adapted params.
`groups` names the params groups adapted in the inner loop (a name or a tuple of names).
Keyword options: the stage's own (`STAGE_OPTIONS`: name, log_after, unroll, and optimizer
where the recipe has no parameter of that name, e.g. meta_sgd's rates scaling an optax
update) go to its `Stage`,
the others to `MetaSpec` (strategy, task_chunk, task_groups, task_reduce, remat). `mode` may
replace a recipe's estimator: a `MODES` name ('exact', 'first_order', ...) or an `Estimator`
object (e.g. `FirstOrder()` to compare gradients).
"""

from typing import Any, Callable, Dict, Optional, Tuple

import optax

from mmtl_jax.meta._estimators import Estimator, Exact, MultiStep, estimator
from mmtl_jax.meta._implicit import Implicit
from mmtl_jax.meta.spec import Group, Loss, MetaSpec, Stage
from mmtl_jax.meta.step import group_optimizer

Mode = Any  # a MODES name or an Estimator
STAGE_OPTIONS = ('name', 'log_after', 'unroll', 'optimizer')


def _rule(lr: Optional[float], optimizer: Optional[optax.GradientTransformation]) -> dict:
  if (lr is None) == (optimizer is None):
    raise ValueError('give exactly one inner rule: lr (plain SGD) or optimizer (optax)')
  return {'lr': lr} if optimizer is None else {'optimizer': optimizer}


def _split(options: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """(the Stage's options, the MetaSpec's options) of a recipe's keyword options."""
  stage = {k: v for k, v in options.items() if k in STAGE_OPTIONS}
  return stage, {k: v for k, v in options.items() if k not in STAGE_OPTIONS}


def _one_stage(groups: Group, support_loss: Loss, query_loss: Loss, mode: Mode,
               options: Dict[str, Any], **rule: Any) -> MetaSpec:
  """A one-stage spec: Stage(groups, support_loss, **rule, stage options) and the rest."""
  stage_options, spec_options = _split(options)
  stage = Stage(groups, support_loss, **rule, **stage_options)
  return MetaSpec((stage,), query_loss, estimator=estimator(mode), **spec_options)


def maml(support_loss: Loss, query_loss: Loss, *, groups: Group, steps: int = 1,
         lr: Optional[float] = None, optimizer: Optional[optax.GradientTransformation] = None,
         mode: Mode = 'exact', **options: Any) -> MetaSpec:
  """MAML (Finn et al. 2017): `steps` inner steps of SGD(lr) (or an optax optimiser) on the
  support loss, differentiated through (second order)."""
  return _one_stage(groups, support_loss, query_loss, mode, options, steps=steps,
                    **_rule(lr, optimizer))


def fomaml(support_loss: Loss, query_loss: Loss, **kwargs: Any) -> MetaSpec:
  """First-order MAML: MAML with the inner updates held constant."""
  return maml(support_loss, query_loss, **dict(kwargs, mode=kwargs.get('mode', 'first_order')))


def reptile(support_loss: Loss, query_loss: Loss, **kwargs: Any) -> MetaSpec:
  """Reptile (Nichol et al. 2018): the direction params - adapted params (give it to plain
  SGD: the outer rate is Reptile's epsilon); the query loss is only reported."""
  return maml(support_loss, query_loss, **dict(kwargs, mode=kwargs.get('mode', 'reptile')))


def anil(support_loss: Loss, query_loss: Loss, *, head: Group = 'head', steps: int = 1,
         lr: float = 0.1, mode: Mode = 'exact', **options: Any) -> MetaSpec:
  """ANIL (Raghu et al. 2020): only `head` adapts; the rest (the body) is meta-trained
  through the head's adaptation."""
  return maml(support_loss, query_loss, groups=head, steps=steps, lr=lr, mode=mode, **options)


def meta_sgd(support_loss: Loss, query_loss: Loss, *, groups: Group, rates: str = 'lr',
             steps: int = 1, mode: Mode = 'exact', **options: Any) -> MetaSpec:
  """Meta-SGD (Li et al. 2017): learned per-entry rates in params[rates] (start them with
  `meta_sgd_rates`), meta-trained by the outer optimiser like any group."""
  return _one_stage(groups, support_loss, query_loss, mode, options, steps=steps,
                    learned_lr=rates)


def maml_plus_plus(support_loss: Loss, query_loss: Loss, *, groups: Group, steps: int,
                   rates: str = 'lslr', multi_step_anneal: int = 100,
                   first_order_until: int = 0, **options: Any) -> MetaSpec:
  """MAML++ (Antoniou et al. 2019): per-layer per-step learned rates (params[rates], start
  them with `lslr_rates`), the multi-step loss annealed over `multi_step_anneal` outer steps,
  and first order for outer steps < first_order_until (one compilation): the estimator
  `MultiStep(Exact(first_order_until), multi_step_anneal)`."""
  mode = MultiStep(Exact(first_order_until), multi_step_anneal)
  return _one_stage(groups, support_loss, query_loss, mode, options, steps=steps,
                    learned_lr=rates, per_step_lr=True)


def imaml(support_loss: Loss, query_loss: Loss, *, groups: Group, steps: int,
          lr: Optional[float] = None, optimizer: Optional[optax.GradientTransformation] = None,
          lam: float = 1.0, cg_steps: int = 10, damping: float = 0.0,
          lam_damping: float = 0.0, pull_back: bool = False, **options: Any) -> MetaSpec:
  """iMAML (Rajeswaran et al. 2019): the proximal inner problem support + lam/2 ||phi -
  params||^2 solved first order, the implicit meta-gradient by `cg_steps` conjugate-gradient
  iterations; memory flat in `steps`. damping and lam_damping give the damped system of the
  authors' code (1.0 and 10.0), pull_back its inner loop: the estimator `Implicit(lam,
  cg_steps, damping, lam_damping, pull_back)`. Metrics 'cg_residual', 'cg_iterations',
  'prox_grad_ratio' say how well both solves went (`meta.solve_problems` reads them)."""
  mode = Implicit(lam=lam, cg_steps=cg_steps, damping=damping, lam_damping=lam_damping,
                  pull_back=pull_back)
  return _one_stage(groups, support_loss, query_loss, mode, options, steps=steps,
                    **_rule(lr, optimizer))


def mmtl(inner_loss: Callable, transfer_loss: Callable, *, alpha: float, beta: float,
         steps: int = 1, mode: Mode = 'first_order', outer_loss: Optional[Callable] = None,
         log_inner_after: bool = False, **options: Any) -> MetaSpec:
  """MMTL (Cai et al. 2020, eqs. 4-7) over params {'theta', 'phi'}.

  Stage 'inner' adapts theta by SGD(alpha) on inner_loss(theta, batch, rng) (eq. 4; the MEAN
  of the k auxiliary losses, so alpha * grad is the paper's (alpha/k) sum_j), then stage
  'transfer' adapts phi by SGD(beta) on transfer_loss(theta', phi, batch, rng) (eq. 5),
  `steps` steps each (alpha and beta keep the paper's names for the two inner rates); the
  outer loss is outer_loss (default transfer_loss) at (theta', phi'). phi may be {} (plain
  MAML: eq. 5 is skipped). Metrics: inner_loss_before, inner_loss_after (log_inner_after),
  transfer_loss_before, outer_loss. options: MetaSpec's (two stages: no stage options).
  """
  outer_loss = outer_loss or transfer_loss
  stages = (Stage('theta', lambda p, b, r: inner_loss(p['theta'], b, r), steps=steps,
                  lr=alpha, name='inner', log_after=log_inner_after),
            Stage('phi', lambda p, b, r: transfer_loss(p['theta'], p['phi'], b, r),
                  steps=steps, lr=beta, name='transfer'))
  return MetaSpec(stages, lambda p, b, r: outer_loss(p['theta'], p['phi'], b, r),
                  estimator=estimator(mode), **options)


def mmtl_optimizer(gamma: float = 1e-3, gamma_phi: Optional[float] = None
                   ) -> optax.GradientTransformation:
  """MMTL's outer optimiser (eqs. 6-7): Adam(gamma) on theta, Adam(gamma_phi, default gamma)
  on phi."""
  gamma_phi = gamma if gamma_phi is None else gamma_phi
  return group_optimizer({'theta': optax.adam(gamma), 'phi': optax.adam(gamma_phi)})


__all__ = ['STAGE_OPTIONS', 'anil', 'fomaml', 'imaml', 'maml', 'maml_plus_plus', 'meta_sgd',
           'mmtl', 'mmtl_optimizer', 'reptile']
