"""Outer optimisers over named parameter groups: each group (theta, phi, a head, learned
inner rates, ...) gets its own optax transformation, chosen by the group's NAME."""

from typing import Mapping

import jax
import optax

from mmtl_jax.types import Params


def param_labels(params: Params) -> Params:
  """Labels every leaf by its top-level NAME (e.g. 'theta' or 'phi'), never by position."""
  return {name: jax.tree.map(lambda _, n=name: n, sub) for name, sub in params.items()}


def group_optimizer(transforms: Mapping[str, optax.GradientTransformation]
                    ) -> optax.GradientTransformation:
  """optax.multi_transform by group name, e.g. {'net': optax.adam(1e-3), 'lr':
  optax.adam(1e-4)}; init raises a ValueError naming any params group without a transform."""
  transforms = dict(transforms)
  inner = optax.multi_transform(transforms, param_labels)

  def init(params):
    missing = sorted(set(params) - set(transforms))
    if missing:
      raise ValueError(f'no outer transform for params group(s) {missing}; '
                       f'transforms are for {sorted(transforms)}')
    return inner.init(params)

  return optax.GradientTransformation(init, inner.update)


__all__ = ['group_optimizer', 'param_labels']
