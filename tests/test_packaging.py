"""The core installs and runs without the speech stack; the extras say what they add.

`pip install mmtl_jax` must give a working `mmtl_jax.meta` (every recipe), `models` and
`examples` with jax, jaxlib, flax, optax and numpy only. The fast tests check the metadata and
run the recipes in a subprocess where every package of the 'ser' extra is made unimportable;
the slow one installs the core into a fresh venv from the package index and runs the library's
own tests there.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata

import pytest

from mmtl_jax import extras

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE = {'jax', 'jaxlib', 'flax', 'optax', 'numpy'}


def _name(requirement: str) -> str:
  return re.split(r'[\s\[<>=!~;]', requirement, maxsplit=1)[0].lower().replace('_', '-')


def _project() -> dict:
  return tomllib.loads((ROOT / 'pyproject.toml').read_text(encoding='utf-8'))['project']


def test_core_dependencies_are_the_library_only():
  project = _project()
  assert {_name(r) for r in project['dependencies']} == CORE
  assert 'librosa' in {_name(r) for r in project['optional-dependencies']['ser']}
  assert not {_name(r) for r in project['optional-dependencies']['test']} & {'librosa',
                                                                              'ml-collections'}


def test_extras_table_matches_pyproject():
  # extras.EXTRAS drives the one-line message: a dependency added to pyproject's [ser] but not
  # there would fail deep in an import chain instead.
  declared = {_name(r) for r in _project()['optional-dependencies']['ser']}
  listed = {dist.lower() for _, dist in extras.EXTRAS['ser']}
  assert declared == listed


def _core_closure() -> set:
  """The distributions a core install brings: CORE and, recursively, their requirements
  (from the metadata of what is installed here; extras of theirs left out)."""
  seen, todo = set(), list(CORE)
  while todo:
    name = todo.pop()
    if name in seen:
      continue
    seen.add(name)
    try:
      requires = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
      continue
    todo += [_name(r) for r in requires if 'extra ==' not in r.partition(';')[2]]
  return seen


def _blocked() -> list:
  """Import names of the 'ser' extra that a core install does not bring (optax already needs
  absl, flax orbax: those stay importable, as they are in a core install)."""
  closure = _core_closure()
  return sorted(module.split('.')[0] for module, dist in extras.EXTRAS['ser']
                if dist.lower() not in closure)


def test_the_ser_extra_adds_the_speech_stack():
  assert {'librosa', 'ml_collections', 'soundfile', 'matplotlib'} <= set(_blocked())


# Makes every module of the 'ser' extra that the core does not bring unimportable.
_BLOCK = textwrap.dedent('''
    import sys
    BLOCKED = %r
    class _Blocker:
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
          raise ModuleNotFoundError(f'No module named {name!r} (blocked)', name=name)
        return None
    sys.meta_path.insert(0, _Blocker())
''') % (_blocked(),)

# Every recipe once on a tiny regression problem, from the core alone.
_RECIPES = textwrap.dedent('''
    import sys
    import jax, jax.numpy as jnp, optax
    from mmtl_jax import meta
    from mmtl_jax.examples import sinusoid
    import mmtl_jax.models
    params = {'body': {'w': jnp.ones((2, 3)) * 0.1}, 'head': {'v': jnp.ones((3,)) * 0.1}}
    def loss(p, b, r, key):
      h = jnp.tanh(b[key + 'x'] @ p['body']['w'])
      return jnp.mean((h @ p['head']['v'] - b[key + 'y']) ** 2)
    support = lambda p, b, r: loss(p, b, r, 's')
    query = lambda p, b, r: loss(p, b, r, 'q')
    ks = jax.random.split(jax.random.PRNGKey(0), 4)
    batch = {'sx': jax.random.normal(ks[0], (3, 4, 2)), 'sy': jax.random.normal(ks[1], (3, 4)),
             'qx': jax.random.normal(ks[2], (3, 4, 2)), 'qy': jax.random.normal(ks[3], (3, 4))}
    G = ('body', 'head')
    R = meta.recipes
    specs = {
        'maml': (R.maml(support, query, groups=G, steps=2, lr=0.1), params),
        'fomaml': (R.fomaml(support, query, groups=G, lr=0.1), params),
        'reptile': (R.reptile(support, query, groups=G, lr=0.1), params),
        'anil': (R.anil(support, query, head='head', lr=0.1), params),
        'meta_sgd': (R.meta_sgd(support, query, groups=G),
                     dict(params, lr=meta.meta_sgd_rates({g: params[g] for g in G}))),
        'maml_plus_plus': (R.maml_plus_plus(support, query, groups=G, steps=2),
                           dict(params, lslr=meta.lslr_rates({g: params[g] for g in G}, 2))),
        'imaml': (R.imaml(support, query, groups=G, steps=3, lr=0.1), params),
        'mmtl': (R.mmtl(lambda th, b, r: support(th, b, r),
                        lambda th, ph, b, r: query(th, b, r) + jnp.sum(ph['a'] ** 2),
                        alpha=0.1, beta=0.1),
                 {'theta': params, 'phi': {'a': jnp.ones(2)}}),
    }
    for name, (spec, p) in specs.items():
      init_fn, step_fn = meta.make_step(spec, optax.sgd(0.01))
      new, _, metrics = jax.jit(step_fn)(p, init_fn(p), batch, jax.random.PRNGKey(1))
      assert all(bool(jnp.isfinite(v)) for v in metrics.values()), (name, metrics)
      assert not all(bool(jnp.all(a == b)) for a, b in
                     zip(jax.tree.leaves(new), jax.tree.leaves(p))), name
    leaked = sorted(m for m in sys.modules if m.split('.')[:2] in
                    (['mmtl_jax', 'ser'], ['mmtl_jax', 'data'], ['mmtl_jax', 'run'],
                     ['mmtl_jax', 'fewshot'], ['mmtl_jax', 'tools']))
    assert not leaked, leaked
    print('recipes ok:', ', '.join(specs))
''')


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True,
                        env=env, cwd=str(ROOT), timeout=600)


@pytest.mark.slow
def test_every_recipe_runs_without_the_speech_stack():
  out = _run(_BLOCK + _RECIPES)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'recipes ok: maml, fomaml' in out.stdout


def test_a_part_that_needs_the_extra_says_so_in_one_line():
  code = _BLOCK + textwrap.dedent('''
      try:
        import mmtl_jax.ser
      except ImportError as e:
        print(type(e).__name__, e)
  ''')
  out = _run(code)
  assert out.returncode == 0, out.stderr[-3000:]
  line = out.stdout.strip()
  assert line.startswith('MissingExtraError mmtl_jax.ser needs the \'ser\' extra'), line
  assert "pip install 'mmtl_jax[ser]'" in line and 'librosa' in line and '\n' not in line


def test_an_entry_point_without_the_extra_prints_one_error_line():
  # `python -c CODE SCRIPT` sees sys.argv == ['-c', SCRIPT]: the script becomes argv[0].
  code = _BLOCK + ('import runpy, sys; sys.argv = sys.argv[1:]; '
                   'runpy.run_path(sys.argv[0], run_name="__main__")')
  out = _run(code, str(ROOT / 'experiments' / 'train.py'))
  assert out.returncode == 2, (out.stdout, out.stderr[-3000:])
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: experiments/train.py needs'), lines


@pytest.mark.slow
def test_core_installs_into_a_fresh_venv_and_its_tests_pass(tmp_path):
  """`pip install mmtl_jax[test]` (no 'ser') from the package index: librosa is not installed,
  the recipes run and tests/meta passes. Skipped where the index cannot be reached."""
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=300)
  py = str(venv / 'bin' / 'python')
  # A copy of the sources: a non-editable install builds in the tree it is given (build/).
  source = tmp_path / 'source'
  shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
      '.git', 'build', 'dist', '*.egg-info', 'runs', '__pycache__', '.pytest_cache'))
  install = subprocess.run([py, '-m', 'pip', 'install', '-q', f'{source}[test]'],
                           capture_output=True, text=True, timeout=1200)
  if install.returncode and re.search(r'(?i)connection|network|resolve|temporary failure',
                                      install.stderr) and 'No matching' not in install.stderr:
    pytest.skip('the package index is not reachable: ' + install.stderr.strip()[-300:])
  assert install.returncode == 0, install.stderr[-3000:]
  absent = subprocess.run([py, '-c', 'import importlib.util as u; print([m for m in '
                           '("librosa", "ml_collections", "soundfile", "matplotlib", "tqdm") '
                           'if u.find_spec(m)])'], capture_output=True, text=True, timeout=120)
  assert absent.stdout.strip() == '[]', absent.stdout + absent.stderr
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  recipes = subprocess.run([py, '-c', _RECIPES], capture_output=True, text=True, env=env,
                           cwd=str(tmp_path), timeout=900)
  assert recipes.returncode == 0, recipes.stderr[-3000:]
  tests = subprocess.run([py, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-n', '2',
                          '-m', 'not slow', str(ROOT / 'tests' / 'meta')],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=1500)
  assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]


def test_the_library_tests_import_nothing_of_the_application():
  # tests/meta runs in a core-only install (the fresh-venv test below): an import of ser, data,
  # run, fewshot, tools or configs there would fail in it.
  import ast  # pylint: disable=g-import-not-at-top
  app = {'ser', 'data', 'run', 'fewshot', 'tools', 'configs'}
  bad = []
  for path in sorted((ROOT / 'tests' / 'meta').glob('*.py')):
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
      for name in names:
        parts = name.split('.')
        if parts[0] == 'mmtl_jax' and len(parts) > 1 and parts[1] in app:
          bad.append(f'{path.name}:{node.lineno} imports {name}')
        if parts[0] in {m.split('.')[0] for m in _blocked()}:
          bad.append(f'{path.name}:{node.lineno} imports {name}')
  assert len(list((ROOT / 'tests' / 'meta').glob('test_*.py'))) >= 8
  assert not bad, bad
