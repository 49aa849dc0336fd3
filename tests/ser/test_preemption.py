"""Cluster preemption: SIGTERM (what SLURM and Kubernetes send before killing) stops
experiments/train.py at the next step boundary with a checkpoint of that step, one line on
stderr and a non-zero exit; the rerun resumes and ends bit-identical to an uninterrupted run.

Before ser/fold.py's `sigterm_stops`, SIGTERM killed the process at once (exit -15, no
checkpoint of the steps since the last one, no line)."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ABSL_LOG = re.compile(r'^[IWEF]\d{4} ')  # absl/glog lines (a CPU-only jax warns once)
STEPS = 150

CONFIG = '''
from mmtl_jax.configs import demo


def get_config():
  c = demo.get_config()
  c.data.root = {root!r}
  c.features.update(n_fft=128, win_ms=8.0, hop_ms=32.0, n_frames=16, workers=1)
  c.model.update(conv_features=(2, 3, 4), conv_kernels=((3, 3), (3, 3), (3, 3)),
                 lstm_hidden=4, fc_hidden=4)
  c.meta.mode = 'first_order'
  c.train.models = ('mmtl',)
  c.train.update(steps={steps}, segments_per_speaker=4, eval_every=25, checkpoint_every=60,
                 log_every=1)
  c.folds.which = (0,)
  c.eval.update(finetune_steps=1, batch_size=32)
  return c
'''


def _start(config_path, workdir, out_dir, tag):
  stdout = open(os.path.join(out_dir, f'{tag}.out'), 'w')
  stderr = open(os.path.join(out_dir, f'{tag}.err'), 'w')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('MMTL_JAX_VERBOSE', None)
  proc = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'experiments', 'train.py'), f'--config={config_path}',
       f'--workdir={workdir}'], stdout=stdout, stderr=stderr, cwd=ROOT, env=env)
  return proc, stdout, stderr


def _run(config_path, workdir, out_dir, tag):
  proc, stdout, stderr = _start(config_path, workdir, out_dir, tag)
  code = proc.wait(timeout=600)
  stdout.close()
  stderr.close()
  with open(os.path.join(out_dir, f'{tag}.err')) as f:
    assert code == 0, f.read()[-3000:]


def _logged_steps(workdir):
  """Steps written to the fold's metrics.jsonl so far (the training is running)."""
  paths = glob.glob(os.path.join(workdir, 'mmtl', '*', 'logs', 'metrics.jsonl'))
  if not paths:
    return 0
  with open(paths[0]) as f:
    return sum(1 for line in f if '"step"' in line)


def _records(workdir):
  """Every number of the fold-run's test and dev records (no times, no provenance)."""
  (path,) = glob.glob(os.path.join(workdir, 'mmtl', '*', 'result.json'))
  with open(path) as f:
    result = json.load(f)
  return {p: {k: r[k] for k in ('UA', 'WA', 'y_true', 'y_pred', 'dev_UA', 'dev_WA',
                                 'selected_step')} for p, r in result['records'].items()}


@pytest.mark.slow  # three training subprocesses
def test_sigterm_checkpoints_one_line_and_resumes_bit_identical(corpus_root, tmp_path):
  config_path = tmp_path / 'preempt_config.py'
  config_path.write_text(CONFIG.format(root=corpus_root, steps=STEPS))
  out_dir = str(tmp_path)
  _run(config_path, str(tmp_path / 'whole'), out_dir, 'whole')

  workdir = str(tmp_path / 'preempted')
  proc, stdout, stderr = _start(config_path, workdir, out_dir, 'cut')
  deadline = time.time() + 300
  while _logged_steps(workdir) < 5 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, 'the run ended before it could be interrupted'
  proc.send_signal(signal.SIGTERM)
  code = proc.wait(timeout=300)
  stdout.close()
  stderr.close()
  with open(os.path.join(out_dir, 'cut.err')) as f:
    err = f.read()
  lines = [l for l in err.splitlines() if l.strip() and not ABSL_LOG.match(l)]
  assert code == 143, (code, err[-3000:])
  assert 'Traceback' not in err, err[-3000:]
  assert len(lines) == 1 and lines[0].startswith('error: stopped by SIGTERM after step '), lines
  assert 'rerun the same command to resume' in lines[0]
  stopped = int(re.search(r'after step (\d+) of', lines[0]).group(1))
  assert 5 <= stopped < STEPS
  ckpt_dir = glob.glob(os.path.join(workdir, 'mmtl', '*', 'checkpoints'))[0]
  assert str(stopped) in os.listdir(ckpt_dir), os.listdir(ckpt_dir)  # the step it stopped at
  assert not glob.glob(os.path.join(workdir, 'mmtl', '*', 'result.json'))

  _run(config_path, workdir, out_dir, 'rerun')
  assert _records(workdir) == _records(str(tmp_path / 'whole'))
