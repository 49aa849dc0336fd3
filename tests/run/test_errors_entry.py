"""Issue 28 at the entry points outside SER training: `fewshot.py --merge` of a malformed file
and `benchmark.py --modes=exakt` are one line, the benchmark's before anything is measured."""

import json
import os
import subprocess
import sys

import pytest

from mmtl_jax.run import errors
from mmtl_jax.tools import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize('content, fragment', [
    ([1, 2], 'no list of records'),                          # TypeError traceback before
    ({'records': [{'method': 'maml'}]}, "way=None"),         # KeyError traceback before
    ({'records': [5]}, 'not an object'),
    ({'records': [{'method': 'maml', 'way': 5, 'shot': 1, 'seed': 0, 'accuracy': 'high',
                   'ci95': 1.0, 's_per_iter': 0.1, 'peak_mem_mb': 1.0}]}, "accuracy='high'"),
])
def test_merging_a_malformed_fewshot_json_is_one_line(tmp_path, content, fragment):
  from mmtl_jax.fewshot import table  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'bad.json'
  path.write_text(json.dumps(content))
  with pytest.raises(errors.ExpectedError) as e:
    table.merge([str(path)])
  line = errors.expected_line(e.value)
  assert fragment in line and str(path) in line and '\n' not in line


def test_benchmark_choices_are_expected_errors():
  for kwargs in (dict(modes=['exakt']), dict(strategies=['pmap']), dict(shape='huge'),
                 dict(iters=3)):
    args = dict(modes=['first_order'], strategies=['loop'], shape='tiny', iters=5)
    args.update(kwargs)
    with pytest.raises(benchmark.BenchmarkArgumentError) as e:
      benchmark.check_choices(**args)
    assert errors.expected_line(e.value) is not None


@pytest.mark.slow  # a subprocess
def test_benchmark_refuses_an_unknown_mode_before_measuring():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop(errors.VERBOSE_ENV, None)
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'benchmark.py'),
                        '--modes=exakt'], capture_output=True, text=True, timeout=300,
                       check=False, cwd=ROOT, env=env)
  assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert 'matmul peak' not in out.stdout  # before: the peak was measured first
  lines = [l for l in out.stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1 and "mode 'exakt'" in lines[0] and '--modes' in lines[0]
