"""Assertions shared by the test files: `from helpers import assert_trees_close`.

Not a test file and not a fixture: pytest puts this directory on sys.path (tests/ has no
__init__.py, and the default import mode prepends the conftest's directory), in the main process
and in every xdist worker alike.
"""

import struct

import jax
import numpy as np


def read_events(path):
  """The events of one TensorBoard event file (TFRecord framing, tensorboardX's own protos;
  no tensorboard needed): a list of `event_pb2.Event`."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out = []
  with open(path, 'rb') as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    (length,) = struct.unpack('<Q', data[pos:pos + 8])
    out.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + length]))
    pos += 12 + length + 4
  return out


def scalar_events(path):
  """[(step, tag, value)] of the scalars of one event file."""
  return [(e.step, v.tag, v.simple_value) for e in read_events(path) for v in e.summary.value
          if v.WhichOneof('value') == 'simple_value']


def plugin_tags(path):
  """{plugin name: [tags]} of the summaries of one event file that name a plugin (hparams,
  text)."""
  out = {}
  for e in read_events(path):
    for v in e.summary.value:
      name = v.metadata.plugin_data.plugin_name
      if name:
        out.setdefault(name, []).append(v.tag)
  return out


def _leaves_by_path(tree):
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(jax.tree_util.keystr(path) or '<root>', leaf) for path, leaf in leaves]


def _as_float64(x):
  x = np.asarray(x)
  return x.astype(np.float64) if x.dtype != np.float64 else x


def _leaf_problem(name, actual, desired, rtol, atol, leaf_scaled_atol, check_dtype):
  """None if the leaves agree, else one line naming the leaf and its errors."""
  a, d = np.asarray(actual), np.asarray(desired)
  if a.shape != d.shape:
    return f'{name}: shape {a.shape} != {d.shape}'
  if check_dtype and a.dtype != d.dtype:
    return f'{name}: dtype {a.dtype} != {d.dtype}'
  if a.size == 0:
    return None
  a64, d64 = _as_float64(a), _as_float64(d)
  tol = atol
  if leaf_scaled_atol:
    finite = np.abs(d64[np.isfinite(d64)])
    tol = atol * (float(finite.max()) if finite.size else 0.0)
  both_nan = np.isnan(a64) & np.isnan(d64)
  same_inf = np.isinf(a64) & (a64 == d64)
  with np.errstate(invalid='ignore', divide='ignore', over='ignore'):
    err = np.abs(a64 - d64)
    bad = ~(both_nan | same_inf | (err <= tol + rtol * np.abs(d64)))
    if not bad.any():
      return None
    err = np.where(both_nan | same_inf, 0.0, err)
    err = np.where(np.isnan(err), np.inf, err)  # a NaN against a number is the worst entry
    rel = err / np.abs(d64)
    rel = np.where(err == 0, 0.0, np.where(np.isinf(err), np.inf, rel))
  worst = np.unravel_index(int(np.argmax(err)), err.shape)
  where = f' at {tuple(int(i) for i in worst)}' if err.ndim else ''
  return (f'{name} {a.shape} {a.dtype}: {int(bad.sum())} of {a.size} entries differ; '
          f'max abs error {float(err.max()):.3g}{where} (actual {float(a64[worst]):.6g}, '
          f'desired {float(d64[worst]):.6g}), max rel error {float(np.max(rel)):.3g}; '
          f'allowed abs {tol:.3g} + rel {rtol:.3g}')


def assert_trees_close(actual, desired, *, rtol, atol, err_msg='', leaf_scaled_atol=False,
                       check_dtype=False):
  """Asserts two pytrees have the same structure and leaves equal within tolerance.

  Leaf by leaf (any array-like, bfloat16 included, compared in float64), as
  np.testing.assert_allclose does: |actual - desired| <= atol + rtol * |desired|, NaN equal to
  NaN. rtol=0, atol=0 asks for exact equality. With leaf_scaled_atol, atol is relative to each
  desired leaf's largest finite |entry| (for sums whose small entries cancel). With check_dtype,
  the leaves' dtypes must match too.

  The failure message names every differing leaf by its key path (e.g.
  "['theta']['head']['kernel']"), with its max abs error (and where), its max rel error and the
  tolerance; `err_msg` comes first.
  """
  head = f'{err_msg}: ' if err_msg else ''
  got, want = _leaves_by_path(actual), _leaves_by_path(desired)
  if jax.tree.structure(actual) != jax.tree.structure(desired):
    got_paths, want_paths = [p for p, _ in got], [p for p, _ in want]
    only_actual = [p for p in got_paths if p not in want_paths]
    only_desired = [p for p in want_paths if p not in got_paths]
    raise AssertionError(
        f'{head}the trees differ in structure: only in actual {only_actual}, only in desired '
        f'{only_desired}\nactual:  {jax.tree.structure(actual)}\n'
        f'desired: {jax.tree.structure(desired)}')
  problems = [_leaf_problem(name, a, d, rtol, atol, leaf_scaled_atol, check_dtype)
              for (name, a), (_, d) in zip(got, want)]
  problems = [p for p in problems if p is not None]
  if problems:
    raise AssertionError(f'{head}{len(problems)} of {len(got)} leaves differ:\n  '
                         + '\n  '.join(problems))


def assert_one_error_line(error, *fragments):
  """The entry points' line for `error` (run/errors.py `expected_line`): the error must be an
  expected one (else a traceback would print), the line one line holding every fragment.
  Returns the line."""
  from mmtl_jax.run import errors  # pylint: disable=g-import-not-at-top
  line = errors.expected_line(error)
  assert line is not None, f'{type(error).__name__} would print a traceback: {error}'
  assert '\n' not in line
  for fragment in fragments:
    assert fragment in line, line
  return line
