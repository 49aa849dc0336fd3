r"""Benchmark one MMTL meta-iteration per meta mode x task strategy; prints a table and targets.

  python experiments/benchmark.py --shape=bench --json=/tmp/bench.json
  python experiments/benchmark.py --shape=paper --json=/tmp/paper.json          # accelerators
  python experiments/benchmark.py --modes=exact,first_order --strategies=loop,map
  python experiments/benchmark.py --config.model.dtype=bfloat16 --config.meta.remat=True
  python experiments/benchmark.py --shape=paper --analyse --json=/tmp/paper_cpu.json  # no GPU
  python experiments/benchmark.py --convs          # each convolution of one task, alone

The JSON starts with `matmul_peak_gflops`, the float32 matmul rate jax reaches here, and every
record's GFLOP/s is also given as a fraction of it (`peak_fraction`). Compare with PyTorch:
`python experiments/pytorch_reference.py --jax_json=/tmp/bench.json` right after.

Shapes: bench = 8 tasks x 8 segments x 100 frames x 64 bins; paper = 8 x 64 x 300 x 200; both
with the Table 1 model of configs/base.py (any --config.* field can be overridden). Each
combination runs in fresh subprocesses (cold compile, then warm persistent cache); what each
field means: src/mmtl_jax/tools/benchmark.py. Figures and analysis: docs/PERFORMANCE.md.
"""

from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/benchmark.py')  # one line, not a traceback

import json

from absl import flags

from mmtl_jax.tools import benchmark
from mmtl_jax.tools import paper_shape
from mmtl_jax import configs
from mmtl_jax.run import errors

_CONFIG = errors.define_config_file('config', configs.config_path('base'),
                                          'Model and meta settings (mode/strategy are swept).')
_SHAPE = flags.DEFINE_enum('shape', 'bench', sorted(benchmark.SHAPES), 'Problem size.')
_MODES = flags.DEFINE_list('modes', list(benchmark.MODES), 'Meta modes to measure.')
_STRATEGIES = flags.DEFINE_list('strategies', list(benchmark.STRATEGIES),
                                "Task strategies to measure ('auto' allowed).")
_ITERS = flags.DEFINE_integer('iters', 5, 'Timed meta-iterations (median reported; >= 5).')
_TIMEOUT = flags.DEFINE_integer('timeout', 900, 'Seconds allowed per subprocess.')
_JSON = flags.DEFINE_string('json', '', 'Write {"records": [...], "summary": [...]} here.')
_ANALYSE = flags.DEFINE_bool(
    'analyse', False, 'Instead of timing every combination: compile each (mode, strategy), '
    'with and without remat, without running it; report XLA FLOPs, bytes and peak memory, '
    'an H100 roofline estimate, and the first_order s/iter of the default strategy '
    '(src/mmtl_jax/tools/paper_shape.py). For the paper shape on a CPU.')


_CONVS = flags.DEFINE_bool(
    'convs', False, 'Instead: time each convolution of one task (forward, input and filter '
    'gradient per block) alone, in this process, and print GFLOP per CPU-second.')


def convs_main():
  """--convs: per-convolution rates of one task at --shape."""
  rows = benchmark.conv_rates(_CONFIG.value, _SHAPE.value)
  for r in rows:
    print(f'block {r["block"]} {r["kernel"]} {r["channels"][0]}->{r["channels"][1]} '
          f'{r["op"]:<12} {r["gflop"]:6.3f} GFLOP {r["wall_ms"]:8.2f} ms {r["cpu_ms"]:8.2f} '
          f'ms CPU {r["gflops_per_cpu_s"]:7.1f} GFLOP per CPU-s')
  gflop, cpu = sum(r['gflop'] for r in rows), sum(r['cpu_ms'] for r in rows) / 1e3
  print(f'all: {gflop:.2f} GFLOP, {cpu * 1e3:.1f} ms CPU, {gflop / cpu:.1f} GFLOP per CPU-s')
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump({'convs': rows}, f, indent=1)


def analyse_main():
  """--analyse: XLA's counts of every compiled combination, in this process."""
  out = paper_shape.report(_CONFIG.value, _MODES.value, _STRATEGIES.value,
                           benchmark.SHAPES[_SHAPE.value])
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(out, f, indent=1)
    print(f'wrote {_JSON.value}')


def main(argv):
  del argv
  # Before anything is measured (the matmul peak alone takes a while): a typo is one line.
  benchmark.check_choices(_MODES.value, _STRATEGIES.value, _SHAPE.value, _ITERS.value)
  if _ANALYSE.value:
    analyse_main()
    return
  if _CONVS.value:
    convs_main()
    return
  peak = benchmark.matmul_peak_gflops()
  print(f'float32 matmul peak (jax): {peak.get("matmul_peak_gflops", float("nan")):.0f} '
        f'GFLOP/s {peak.get("error", "")}')
  print(benchmark.format_table([]))
  records = benchmark.run(_CONFIG.value, _MODES.value, _STRATEGIES.value, _SHAPE.value,
                          iters=_ITERS.value, timeout_s=_TIMEOUT.value,
                          peak_gflops=peak.get('matmul_peak_gflops'))
  # Measured again at the end: a large change means the machine was not quiet.
  peak_after = benchmark.matmul_peak_gflops().get('matmul_peak_gflops')
  print()
  print(benchmark.format_table(records))
  summary = benchmark.summary(records, peak)
  summary.append(f'matmul peak at the end of the run: {peak_after or float("nan"):.0f} GFLOP/s')
  print('\n'.join(summary))
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump({'matmul_peak_gflops': peak.get('matmul_peak_gflops'),
                 'matmul_peak_gflops_after': peak_after, 'matmul_peak': peak,
                 'records': records, 'summary': summary,
                 'config': json.loads(_CONFIG.value.to_json_best_effort())}, f, indent=1)
    print(f'wrote {_JSON.value}')


if __name__ == '__main__':
  errors.run(main)
