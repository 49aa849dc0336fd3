"""The benchmark harness on a tiny model and shape (figures themselves are not tested)."""

import json
import os
import subprocess
import sys

import pytest

from mmtl_jax.tools import benchmark
from mmtl_jax.configs import base


_SCRIPT = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'benchmark.py')


@pytest.fixture(name='bench_config')
def fixture_bench_config(tiny_model):
  config = base.get_config()
  config.model = tiny_model()
  return config


def test_run_records_every_field_and_the_cache_helps(bench_config, tmp_path):
  records = benchmark.run(bench_config, ['first_order', 'exact'], ['auto'], 'tiny',
                          iters=5, timeout_s=300, cache_root=str(tmp_path),
                          progress=lambda line: None)
  assert len(records) == 2
  for r in records:
    assert 'error' not in r, r
    for field in ('mode', 'strategy', 'shape', 'compile_s', 'compile_cached_s', 's_per_iter',
                  'peak_mem_mb', 'gflops_per_s'):
      assert field in r, (field, r)
    assert r['shape'] == 'tiny' and len(r['iters_s']) == 5
    assert r['s_per_iter'] > 0 and r['peak_mem_mb'] > 0 and r['work_gflop'] > 0
    assert r['compile_cached_s'] < r['compile_s'], r  # the persistent cache was hit
  assert records[0]['strategy'] == records[0]['default_strategy']  # 'auto' resolved
  exact, first_order = records[1], records[0]
  assert exact['work_gflop'] > first_order['work_gflop']  # second-order work counted
  text = '\n'.join(benchmark.summary(records))
  assert 'exact / first_order' in text and 'max cold compile' in text
  assert 'ERROR' not in benchmark.format_table(records)


def test_failures_become_error_records(bench_config, tmp_path):
  job = benchmark.Job(bench_config.to_json_best_effort(), 'first_order', 'loop', 'nope', 5,
                      str(tmp_path), 'cold')
  record = benchmark.run_isolated(job, timeout_s=120)
  assert 'error' in record and 'nope' in record['error']


@pytest.mark.parametrize('kwargs, match', [
    (dict(shape='huge'), 'shape'), (dict(iters=3), 'iters'), (dict(modes=['second']), 'mode'),
    (dict(strategies=['pmap']), 'strategy')])
def test_bad_arguments_are_rejected(bench_config, kwargs, match):
  args = dict(modes=['first_order'], strategies=['loop'], shape='tiny', iters=5)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    benchmark.run(bench_config, **args)


def test_cli_writes_json(tmp_path):
  out = tmp_path / 'bench.json'
  proc = subprocess.run(
      [sys.executable, _SCRIPT, '--shape=tiny', '--modes=reptile', '--strategies=loop',
       f'--json={out}', '--config.model.conv_features=(2,3)',
       '--config.model.conv_kernels=((3,3),(2,3))', '--config.model.lstm_hidden=4',
       '--config.model.fc_hidden=5'],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  data = json.loads(out.read_text())
  assert [r['mode'] for r in data['records']] == ['reptile']
  assert 'max cold compile' in proc.stdout
