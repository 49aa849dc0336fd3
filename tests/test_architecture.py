"""The package layout of docs/ARCHITECTURE.md, checked from the source: the imports of every
module (also those inside functions) form no cycle, each layer imports only the layers below
it, functions stay short enough to read, meta/ has one step builder, no module imports a
private name (a `_module` or a `_name`) of another package at module level, and every
third-party package imported is declared in pyproject.toml."""

import ast
import importlib.metadata
import pathlib
import re
import sys

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / 'src'
PACKAGE = 'mmtl_jax'

# What each top-level part of the package may import besides itself. `records` and
# `registry` import no sibling; `meta` knows nothing of speech.
ALLOWED = {
    'records': set(),
    'registry': set(),
    'extras': set(),
    'meta': {'registry'},
    'models': {'records', 'registry'},
    'data': {'extras', 'records', 'registry', 'run'},
    'run': {'extras', 'records', 'registry'},
    'ser': {'extras', 'records', 'registry', 'meta', 'models', 'data', 'run', 'pretrained'},
    'configs': {'extras'},
    'tools': {'extras', 'records', 'registry', 'meta', 'models', 'data', 'run', 'ser', 'configs',
              'pretrained'},
    'examples': {'records', 'registry', 'meta', 'models', 'run'},
    'fewshot': {'extras', 'records', 'registry', 'meta', 'models', 'run'},
    'pretrained': {'extras', 'run'},
}
MAX_CODE_LINES = 45  # per function, without docstring, comments and blank lines


def module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(SRC).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts.pop()
  return '.'.join(parts)


def modules():
  return {module_name(p): p for p in (SRC / PACKAGE).rglob('*.py')}


def imports_of(path: pathlib.Path, known) -> set:
  """The package modules that `path` imports, resolving `from P import m` to P.m when m is a
  module; imports inside functions count too."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.split('.')[0] == PACKAGE}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if node.module.split('.')[0] != PACKAGE:
        continue
      for alias in node.names:
        sub = f'{node.module}.{alias.name}'
        found.add(sub if sub in known else node.module)
  return found & set(known)


def graph():
  known = modules()
  return {name: imports_of(path, known) for name, path in known.items()}


def find_cycle(edges):
  """One import cycle as a list of module names, or None."""
  state = {}

  def visit(node, stack):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(edges.get(node, ())):
      if state.get(nxt) == 'open':
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt, stack)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(edges):
    if node not in state:
      cycle = visit(node, [])
      if cycle:
        return cycle
  return None


def layer(module: str) -> str:
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else ''


def test_find_cycle_finds_one():  # the detector itself must be able to fail
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_no_import_cycle_in_src():
  edges = graph()
  assert len(edges) > 30, sorted(edges)  # the walk found the package
  cycle = find_cycle(edges)
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_each_layer_imports_only_the_layers_below_it():
  assert set(ALLOWED) == {layer(m) for m in modules() if layer(m)}, 'a new top-level part'
  edges = graph()
  assert not edges[PACKAGE], 'the package root (its __version__) imports nothing'
  bad = []
  for module, targets in edges.items():
    if not layer(module):
      continue
    for target in targets:
      if layer(target) not in ALLOWED[layer(module)] | {layer(module), ''}:
        bad.append(f'{module} imports {target}')
  assert not bad, '\n'.join(bad)


def code_lines(lines, node) -> int:
  body = node.body
  doc = set()
  if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
      and isinstance(body[0].value.value, str):
    doc = set(range(body[0].lineno, body[0].end_lineno + 1))
  return sum(1 for i in range(node.lineno, node.end_lineno + 1)
             if i not in doc and lines[i - 1].strip() and not lines[i - 1].strip().startswith('#'))


@pytest.mark.parametrize('part', sorted(set(ALLOWED) - {'configs'}))
def test_functions_are_short(part):
  root = SRC / PACKAGE / part
  paths = [root.with_suffix('.py')] if root.with_suffix('.py').exists() else root.rglob('*.py')
  long = []
  for path in paths:
    text = path.read_text(encoding='utf-8')
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        n = code_lines(lines, node)
        if n > MAX_CODE_LINES:
          long.append(f'{path.relative_to(SRC)}:{node.lineno} {node.name}: {n} code lines')
  assert not long, '\n'.join(long)


def private_imports(path: pathlib.Path, own_package: str) -> list:
  """Module-level `from mmtl_jax.X import Y` of a private module or name (a path component
  or Y starting with '_') whose package is not `own_package` or inside it."""
  bad = []
  for node in ast.parse(path.read_text(encoding='utf-8')).body:
    if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
      continue
    parts = node.module.split('.')
    if parts[0] != PACKAGE:
      continue
    for alias in node.names:
      full = parts + alias.name.split('.')
      first_private = next((i for i, p in enumerate(full) if p.startswith('_')
                            and not p.startswith('__')), None)
      if first_private is None:
        continue
      owner = full[:first_private]  # the package that holds the private item
      if not SRC.joinpath(*owner).is_dir():
        owner = owner[:-1]
      owner = '.'.join(owner)
      if own_package != owner and not own_package.startswith(owner + '.'):
        bad.append(f'{path.name}:{node.lineno} imports {node.module}.{alias.name}')
  return bad


def test_private_import_detector_can_fail(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('from mmtl_jax.meta._tasks import pad_tasks\n'
                 'from mmtl_jax.meta.gradient import _mode_fn\n'
                 'from mmtl_jax.meta import make_step\n'
                 'def f():\n  from mmtl_jax.meta._tasks import pad_tasks\n')
  assert len(private_imports(bad, 'mmtl_jax.ser')) == 2
  assert not private_imports(bad, 'mmtl_jax.meta')


def test_no_private_import_from_another_package():
  roots = [(p, module_name(p).rsplit('.', 1)[0] if p.name != '__init__.py' else module_name(p))
           for p in (SRC / PACKAGE).rglob('*.py')]
  experiments = SRC.parent / 'experiments'
  roots += [(p, 'experiments') for p in experiments.glob('*.py')]
  bad = [line for path, package in roots for line in private_imports(path, package)]
  assert not bad, '\n'.join(bad)


def step_builders() -> list:
  """'module.function' of every function in meta/ that builds a meta-step."""
  found = []
  for path in (SRC / PACKAGE / 'meta').rglob('*.py'):
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
      if isinstance(node, ast.FunctionDef) and node.name.startswith('make_') \
          and 'step' in node.name:
        found.append(f'{module_name(path)}.{node.name}')
  return found


def test_meta_has_one_step_builder():
  assert step_builders() == ['mmtl_jax.meta.step.make_step']


def _distribution(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()  # PEP 503 normalisation


# The parts a core install (`pip install mmtl_jax`, no extra) must run: they may import only
# the core dependencies; every other part may also import the 'ser' extra's.
CORE_PARTS = {'', 'records', 'registry', 'extras', 'meta', 'models', 'examples'}


def _third_party_imports(path: pathlib.Path) -> set:
  imported = set()
  for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
    if isinstance(node, ast.Import):
      imported |= {a.name.split('.')[0] for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      imported.add(node.module.split('.')[0])
  return imported - set(sys.stdlib_module_names) - {PACKAGE}


def test_every_package_imported_by_src_is_declared():
  """pyproject.toml names the distribution of every third-party module that src imports
  directly (not only through another dependency): the core parts in `dependencies`, the
  others in `dependencies` or the 'ser' extra."""
  tomllib = pytest.importorskip('tomllib')  # Python >= 3.11
  with open(SRC.parent / 'pyproject.toml', 'rb') as f:
    project = tomllib.load(f)['project']
  names = lambda reqs: {_distribution(re.split(r'[\[<>=!~; ]', d, 1)[0]) for d in reqs}
  core = names(project['dependencies'])
  full = core | names(project['optional-dependencies']['ser'])
  owners = importlib.metadata.packages_distributions()
  missing = {}
  for path in (SRC / PACKAGE).rglob('*.py'):
    declared = core if layer(module_name(path)) in CORE_PARTS else full
    for m in _third_party_imports(path):
      if not {_distribution(d) for d in owners.get(m, [m])} & declared:
        missing[f'{module_name(path)}: {m}'] = owners.get(m)
  assert not missing, f'imported by src/ but not declared in pyproject.toml: {missing}'


def test_run_does_not_import_meta():
  # run/ is infrastructure below the meta library: it builds its own task mesh (process.py).
  edges = graph()
  bad = [f'{m} imports {t}' for m, targets in edges.items() if layer(m) == 'run'
         for t in targets if layer(t) == 'meta']
  assert not bad, bad


def test_no_thread_local_state_in_src():
  # The task axis passes its padding count explicitly; no module keeps hidden per-thread state.
  hits = [str(path) for path in (SRC / PACKAGE).rglob('*.py')
          if 'threading.local' in path.read_text()]
  assert not hits, hits


def _architecture_block(heading: str) -> str:
  """The first ```python block after `heading` in docs/ARCHITECTURE.md."""
  text = (SRC.parent / 'docs' / 'ARCHITECTURE.md').read_text()
  after = text[text.index(heading):]
  start = after.index('```python\n') + len('```python\n')
  return after[start:after.index('```', start)]


@pytest.mark.parametrize('strategy', ['loop', 'map', 'vmap', 'sharded'])
def test_the_worked_example_estimator_runs_under_every_strategy(strategy):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mmtl_jax import meta  # pylint: disable=g-import-not-at-top
  scope = {}
  exec(compile(_architecture_block('### A meta mode'), 'ARCHITECTURE.md', 'exec'), scope)
  try:
    loss = lambda p, b, r: jnp.mean((b['x'] * p['net']['w'] - b['y']) ** 2)
    batch = {'x': jnp.linspace(0.5, 2.0, 12).reshape(3, 4),
             'y': jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)}
    params = {'net': {'w': jnp.asarray(40.0)}}
    spec = meta.recipes.maml(loss, loss, groups='net', steps=2, lr=0.01,
                             mode='first_order_clipped', strategy=strategy)
    assert isinstance(spec.estimator, scope['FirstOrderClipped'])
    grads = meta.meta_gradient(spec, params, batch, jax.random.PRNGKey(0)).grads
    plain = meta.meta_gradient(meta.recipes.fomaml(loss, loss, groups='net', steps=2, lr=0.01,
                                                   strategy=strategy),
                               params, batch, jax.random.PRNGKey(0)).grads
    assert abs(float(plain['net']['w'])) > 1  # clipped per task to norm 1, so the mean too
    assert abs(float(grads['net']['w'])) <= 1 + 1e-6
  finally:
    meta.MODES.unregister('first_order_clipped')


def _public_modules():
  for path in sorted((SRC / PACKAGE).rglob('*.py')):
    parts = path.relative_to(SRC / PACKAGE).parts
    if any(p.startswith('_') for p in parts[:-1]) or (
        parts[-1].startswith('_') and parts[-1] != '__init__.py'):
      continue
    yield path


def test_every_public_module_declares_its_names():
  """Each public module has an `__all__` (a package `__init__` that defines nothing may go
  without), and every name in it is bound in the module."""
  problems = []
  for path in _public_modules():
    tree = ast.parse(path.read_text(encoding='utf-8'))
    bound, declared = set(), None
    for node in tree.body:
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        bound.add(node.name)
      elif isinstance(node, (ast.Import, ast.ImportFrom)):
        bound |= {(a.asname or a.name).split('.')[0] for a in node.names}
      elif isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
          if isinstance(t, ast.Name):
            if t.id == '__all__':
              declared = ast.literal_eval(node.value)
            bound.add(t.id)
    name = str(path.relative_to(SRC))
    if declared is None:
      defines = any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in tree.body)
      if path.name != '__init__.py' or defines:
        problems.append(f'{name}: no __all__')
      continue
    problems += [f'{name}: __all__ names {n!r}, which it does not bind'
                 for n in declared if n not in bound]
  assert not problems, '\n'.join(problems)
