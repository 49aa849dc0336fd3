r"""An independent PyTorch implementation of one MMTL meta-iteration, timed on this machine.

The baseline of issue 5's CPU targets: the same Table 1 model, the same bench shape (8 speaker
tasks x 8 segments x 100 frames x 64 bins, 3 auxiliary tasks through the one shared head), the
same per-task steps (eq. 4 at theta, eq. 5 at theta', the outer gradient at (theta', phi')) and
the same outer Adam step as `mmtl_jax.meta`. PyTorch is NOT a dependency of mmtl_jax; install
it in a separate environment to run this:

  python -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.13.0 numpy
  /tmp/torch/bin/python experiments/pytorch_reference.py --jax_json=bench.json  # vs benchmark.py

(torch is imported from that venv; the script needs nothing of mmtl_jax.) The targets (issue
12): mmtl_jax's default strategy >= 2.5x faster than the strongest first-order variant and
>= 3x faster than func_exact, measured back to back with benchmark.py on a quiet machine.

Variants, each the median seconds per meta-iteration of --iters after one warm-up:
  reference_first_order  tasks in a Python loop, a deep copy of the model per task and
                         `loss.backward()` (the structure of the original code, DESIGN.md),
                         with its extra no-grad forward pass at theta' for eq. 5;
  func_first_order       torch.func, per-task loop, one forward pass at theta' shared by eq.
                         5 and the outer gradient (the work mmtl_jax does after XLA's CSE);
  func_exact             torch.func, second order through eqs. 4-5 (grad of grad).
Prints one JSON line per variant and, with --jax_json, mmtl_jax's speed-ups from the same
machine (run both back to back on an otherwise idle machine).
"""

import argparse
import copy
import json
import os
import statistics
import time

import torch
from torch import nn
from torch.func import functional_call, grad, vjp

TASKS, SEGMENTS, FRAMES, BINS, AUX, CLASSES = 8, 8, 100, 64, 3, 4
ALPHA = BETA = 0.01
GAMMA = 0.001


class MetaLearner(nn.Module):
  """Table 1: 3 x (conv SAME -> ReLU -> max-pool 2x2), BiLSTM (final h of both directions),
  FC 64 + ReLU, the shared head FC 4. Input [B, T, F] -> logits [B, 4]."""

  def __init__(self):
    super().__init__()
    chans, kernels = (1, 16, 24, 32), ((12, 16), (8, 12), (5, 7))
    self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], kernels[i], padding='same')
                               for i in range(3))
    self.lstm = nn.LSTM((BINS // 8) * 32, 128, batch_first=True, bidirectional=True)
    self.fc = nn.Linear(256, 64)
    self.head = nn.Linear(64, CLASSES)

  def forward(self, x):
    y = x[:, None]
    for conv in self.convs:
      y = nn.functional.max_pool2d(torch.relu(conv(y)), 2)
    b, c, t, f = y.shape
    y = y.permute(0, 2, 3, 1).reshape(b, t, f * c)
    _, (h_n, _) = self.lstm(y)
    y = torch.cat([h_n[0], h_n[1]], dim=-1)
    return self.head(torch.relu(self.fc(y)))


def weighted_ce(logits, labels, weights):
  return nn.functional.cross_entropy(logits, labels, weight=weights)


def make_batch(seed=0):
  g = torch.Generator().manual_seed(seed)
  return {
      'x': torch.randn(TASKS, SEGMENTS, FRAMES, BINS, generator=g),
      'target': torch.randint(0, CLASSES, (TASKS, SEGMENTS), generator=g),
      'aux': torch.randint(0, CLASSES, (TASKS, SEGMENTS, AUX), generator=g),
      'target_weight': torch.rand(TASKS, CLASSES, generator=g) * 0.8 + 0.2,
      'aux_weight': torch.rand(TASKS, AUX, CLASSES, generator=g) * 0.8 + 0.2,
  }


def task(batch, i):
  return {k: v[i] for k, v in batch.items()}


def aux_loss_of(logits, t):
  return sum(weighted_ce(logits, t['aux'][:, j], t['aux_weight'][j]) for j in range(AUX)) / AUX


class Reference:
  """Per-task deep copies and loss.backward(), first order."""

  def __init__(self):
    self.meta, self.transfer = MetaLearner(), nn.Linear(CLASSES, CLASSES)
    self.opt = torch.optim.Adam(list(self.meta.parameters()) + list(self.transfer.parameters()),
                                lr=GAMMA)

  def step(self, batch):
    owned = list(self.meta.parameters()) + list(self.transfer.parameters())
    for p in owned:
      p.grad = torch.zeros_like(p)
    for i in range(TASKS):
      t = task(batch, i)
      meta, transfer = copy.deepcopy(self.meta), copy.deepcopy(self.transfer)
      aux_loss_of(meta(t['x']), t).backward()  # eq. 4
      with torch.no_grad():
        for p in meta.parameters():
          p -= ALPHA * p.grad
          p.grad = None
      with torch.no_grad():
        features = meta(t['x'])
      weighted_ce(transfer(features), t['target'], t['target_weight']).backward()  # eq. 5
      with torch.no_grad():
        for p in transfer.parameters():
          p -= BETA * p.grad
          p.grad = None
      loss = weighted_ce(transfer(meta(t['x'])), t['target'], t['target_weight'])
      loss.backward()  # the outer gradient at (theta', phi'), first order
      adapted = list(meta.parameters()) + list(transfer.parameters())
      with torch.no_grad():
        for p, q in zip(owned, adapted):
          p.grad += q.grad / TASKS
    self.opt.step()


class Functional:
  """torch.func: functional_call and grad, first order or exact second order."""

  def __init__(self, exact):
    self.exact = exact
    self.meta, self.transfer = MetaLearner(), nn.Linear(CLASSES, CLASSES)
    self.theta = {k: v.detach().clone().requires_grad_() for k, v in
                  self.meta.named_parameters()}
    self.phi = {k: v.detach().clone().requires_grad_() for k, v in
                self.transfer.named_parameters()}
    self.opt = torch.optim.Adam(list(self.theta.values()) + list(self.phi.values()), lr=GAMMA)

  def _inner(self, theta, t):
    return aux_loss_of(functional_call(self.meta, theta, (t['x'],)), t)

  def _transfer(self, theta, phi, t):
    logits = functional_call(self.transfer, phi, (functional_call(self.meta, theta, (t['x'],)),))
    return weighted_ce(logits, t['target'], t['target_weight'])

  def _head_loss(self, phi, meta_logits, t):
    logits = functional_call(self.transfer, phi, (meta_logits,))
    return weighted_ce(logits, t['target'], t['target_weight'])

  def _task_grad(self, theta, phi, t):
    if self.exact:
      def outer(theta, phi):
        g = grad(self._inner)(theta, t)  # eq. 4
        theta_p = {k: theta[k] - ALPHA * g[k] for k in theta}
        g_phi = grad(self._transfer, argnums=1)(theta_p, phi, t)  # eq. 5
        phi_p = {k: phi[k] - BETA * g_phi[k] for k in phi}
        return self._transfer(theta_p, phi_p, t)
      return grad(outer, argnums=(0, 1))(theta, phi)
    g = grad(self._inner)(theta, t)  # eq. 4
    theta_p = {k: (theta[k] - ALPHA * g[k]).detach() for k in theta}
    meta_logits, meta_vjp = vjp(lambda th: functional_call(self.meta, th, (t['x'],)), theta_p)
    g_phi = grad(self._head_loss)(phi, meta_logits.detach(), t)  # eq. 5
    phi_p = {k: (phi[k] - BETA * g_phi[k]).detach() for k in phi}
    g_phi_p, g_logits = grad(self._head_loss, argnums=(0, 1))(phi_p, meta_logits, t)
    (g_theta_p,) = meta_vjp(g_logits)
    return g_theta_p, g_phi_p

  def step(self, batch):
    theta = {k: v.detach() for k, v in self.theta.items()}
    phi = {k: v.detach() for k, v in self.phi.items()}
    total = None
    for i in range(TASKS):
      g = self._task_grad(theta, phi, task(batch, i))
      total = g if total is None else tuple({k: a[k] + b[k] for k in a}
                                            for a, b in zip(total, g))
    for params, grads in zip((self.theta, self.phi), total):
      for k, p in params.items():
        p.grad = grads[k] / TASKS
    self.opt.step()


def time_variant(name, learner, iters):
  batch = make_batch()
  learner.step(batch)  # warm-up
  times = []
  for i in range(iters):
    b = make_batch(i + 1)
    start = time.perf_counter()
    learner.step(b)
    times.append(time.perf_counter() - start)
  return {'variant': name, 's_per_iter': statistics.median(times),
          'iters_s': [round(t, 4) for t in times], 'torch': torch.__version__,
          'threads': torch.get_num_threads()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--iters', type=int, default=5)
  parser.add_argument('--variants', default='reference_first_order,func_first_order,func_exact')
  parser.add_argument('--jax_json', default='', help='benchmark.py --json output to compare')
  parser.add_argument('--json', default='', help='write the timings and comparison here')
  args = parser.parse_args()
  if args.iters < 1:
    parser.error(f'--iters must be at least 1, got {args.iters}')
  records = []
  if args.jax_json:
    try:
      with open(args.jax_json) as f:
        records = json.load(f)['records']
    except (OSError, ValueError, KeyError) as e:
      parser.error(f'--jax_json={args.jax_json}: not a benchmark.py JSON with records ({e})')
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  makers = {'reference_first_order': Reference,
            'func_first_order': lambda: Functional(exact=False),
            'func_exact': lambda: Functional(exact=True)}
  names = args.variants.split(',')
  unknown = [n for n in names if n not in makers]
  if unknown:
    parser.error(f'unknown variants {unknown}; expected some of {sorted(makers)}')
  results = {}
  for name in names:
    results[name] = time_variant(name, makers[name](), args.iters)
    print(json.dumps(results[name]), flush=True)
  if records:
    for line in compare(records, results):
      print(line)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'results': results, 'comparison': compare(records, results)}, f, indent=1)


# mmtl_jax's default strategy must be this many times faster than the strongest PyTorch.
TARGETS = {'first_order': 2.5, 'exact': 3.0}
VARIANTS_OF = {'first_order': ('reference_first_order', 'func_first_order'),
               'exact': ('func_exact',)}


def compare(records, results):
  """Lines: mmtl_jax's speed-up over every PyTorch variant, and over the strongest (fastest)
  one of each mode against TARGETS."""
  default = {r['mode']: r for r in records
             if 'error' not in r and r['strategy'] == r.get('default_strategy')}
  lines = []
  for mode, names in VARIANTS_OF.items():
    timed = {n: results[n]['s_per_iter'] for n in names if n in results}
    if mode not in default or not timed:
      continue
    jax_s = default[mode]['s_per_iter']
    for name, torch_s in timed.items():
      lines.append(f'mmtl_jax {mode} ({default[mode]["strategy"]}) {jax_s:.3f} s vs PyTorch '
                   f'{name} {torch_s:.3f} s: {torch_s / jax_s:.2f}x faster')
    strongest = min(timed, key=timed.get)
    speedup = timed[strongest] / jax_s
    lines.append(f'{mode} speed-up vs the strongest PyTorch ({strongest}): {speedup:.2f}x '
                 f'(target >= {TARGETS[mode]}: {"met" if speedup >= TARGETS[mode] else "NOT met"})')
  if 'func_first_order' in results and 'func_exact' in results:
    ratio = results['func_exact']['s_per_iter'] / results['func_first_order']['s_per_iter']
    lines.append(f'PyTorch exact / first_order (torch.func): {ratio:.2f}')
  return lines


if __name__ == '__main__':
  main()
