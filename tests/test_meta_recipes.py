"""Every recipe of docs/META_API.md runs as written: the setup block, then each recipe in a
fresh copy of its namespace; each must train (finite outer loss, params moved)."""

import pathlib
import re

import jax
import numpy as np
import pytest

DOC = pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'META_API.md'
RECIPES = ('MAML', 'FOMAML', 'Reptile', 'ANIL', 'Meta-SGD', 'MAML++', 'iMAML', 'MMTL')


def recipe_blocks():
  """{heading: first ```python block} of the '### ' headings under '## Recipes'."""
  text = DOC.read_text(encoding='utf-8')
  section = text.split('\n## Recipes\n', 1)[1].split('\n## ', 1)[0]
  blocks = {}
  for part in re.split(r'\n### ', '\n' + section)[1:]:
    heading, body = part.split('\n', 1)
    code = re.search(r'```python\n(.*?)```', body, re.S)
    assert code, f'recipe {heading!r} has no python block'
    blocks[heading.strip()] = code.group(1)
  return blocks


@pytest.fixture(name='setup', scope='module')
def fixture_setup():
  scope = {}
  code = compile(recipe_blocks()['Setup'], 'META_API.md:Setup', 'exec')
  exec(code, scope)  # pylint: disable=exec-used
  return scope


def test_the_doc_has_every_recipe():
  assert set(recipe_blocks()) == {'Setup', *RECIPES}


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_runs_and_trains(setup, name):
  scope = dict(setup)
  code = compile(recipe_blocks()[name], f'META_API.md:{name}', 'exec')
  exec(code, scope)  # pylint: disable=exec-used
  assert np.isfinite(float(scope['metrics']['outer_loss']))
  assert np.isfinite(float(scope['metrics']['grad_norm'])) and scope['metrics']['grad_norm'] > 0
  if name == 'MMTL':
    before = {'theta': dict(setup['params']['body']), 'phi': setup['params']['head']}
    after = {'theta': {k: v for k, v in scope['mmtl_params']['theta'].items() if k != 'aux'},
             'phi': scope['mmtl_params']['phi']}
    assert isinstance(scope['spec'], scope['meta'].MetaSpec)
  else:
    before, after = setup['params'], {g: scope['new_params'][g] for g in ('body', 'head')}
  moved = max(float(np.abs(a - b).max())
              for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before)))
  assert moved > 1e-5, moved
