"""What each evaluation protocol spends on the test speaker, in words for results.md.

Protocols differ in how much they adapt to the test speaker before predicting, and UA moves
with that budget: 'paper' as configured here fine-tunes for a handful of SGD steps, while the
paper's reference code ran 300 Adam epochs on the test speaker's V/A/D labels (what
`configs/reference_finetune.py` reproduces). A table that does not say which is not comparable.
"""

from __future__ import annotations

from typing import Any, Mapping


def config_get(cfg: Mapping[str, Any] | None, dotted: str, default: Any = None) -> Any:
  """cfg['a']['b'] for 'a.b' in a config read back from JSON; default where a part is absent."""
  node: Any = cfg
  for part in dotted.split('.'):
    if not isinstance(node, Mapping) or part not in node:
      return default
    node = node[part]
  return node


def paper_budget(cfg: Mapping[str, Any]) -> str:
  """The 'paper' protocol's fine-tuning budget on the test speaker's auxiliary labels."""
  n = int(config_get(cfg, 'eval.finetune_steps', 0))
  if n == 0:
    return 'no fine-tuning (eval.finetune_steps = 0): the same as strict'
  unit = str(config_get(cfg, 'eval.finetune_unit', 'steps'))
  optimiser = str(config_get(cfg, 'eval.finetune_optimizer', 'sgd'))
  lr = config_get(cfg, 'eval.finetune_lr', '?')
  batch = config_get(cfg, 'train.segments_per_speaker', '?')
  what = (f'{n} {unit[:-1] if n == 1 else unit} (passes over all of the speaker\'s segments, '
          f'minibatches of {batch})' if unit == 'epochs' else
          f'{n} {"step" if n == 1 else "steps"} on minibatches of {batch} segments')
  return (f'{what} of {optimiser} at lr {lr} on the test speaker\'s auxiliary labels '
          '(MMTL: theta, phi frozen; CNN-LSTM+MTL: extractor and auxiliary heads, emotion '
          'head frozen; CNN-LSTM: none, it has no auxiliary task); no emotion label is used')


def corpus_label(cfg: Mapping[str, Any] | None) -> str:
  """The corpus a run trained on, in a few words: data.kind, and for a manifest the CSV's
  directory and name ('manifest emodb/annotations.csv'), for IEMOCAP its sessions."""
  kind = str(config_get(cfg, 'data.kind', '?'))
  if kind == 'manifest':
    path = str(config_get(cfg, 'data.manifest.path', '') or '')
    parts = [p for p in path.replace('\\', '/').split('/') if p][-2:]
    return f"manifest {'/'.join(parts)}" if parts else 'manifest'
  if kind == 'iemocap':
    sessions = config_get(cfg, 'data.iemocap.sessions')
    if isinstance(sessions, (list, tuple)):
      return f"iemocap sessions {','.join(str(s) for s in sessions)}"
  return kind


def training_budget(cfg: Mapping[str, Any] | None) -> str:
  """'150 steps' (train.steps per fold), with ', folds.which 0' when a subset of folds ran."""
  which = config_get(cfg, 'folds.which', ())
  subset = (f", folds.which {','.join(str(w) for w in which)}"
            if isinstance(which, (list, tuple)) and which else '')
  return f"{config_get(cfg, 'train.steps', '?')} steps{subset}"


def budget_record(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
  """results.json's 'budget' and 'corpus' entries: what two runs must share to be compared
  (the config holds the same fields; these say it in one place gather and readers use)."""
  protocols = {}
  for protocol in config_get(cfg, 'eval.protocols', ('paper', 'strict')):
    protocols[str(protocol)] = (paper_budget(cfg or {}) if protocol == 'paper' else
                                'no label of the test speaker' if protocol == 'strict' else
                                'see mmtl_jax.ser.evaluate')
  return {'budget': {'train_steps': config_get(cfg, 'train.steps'),
                     'segments_per_speaker': config_get(cfg, 'train.segments_per_speaker'),
                     'folds_which': list(config_get(cfg, 'folds.which', ()) or ()),
                     'finetune_steps': config_get(cfg, 'eval.finetune_steps'),
                     'finetune_unit': config_get(cfg, 'eval.finetune_unit'),
                     'protocols': protocols, 'text': training_budget(cfg)},
          'corpus': {'kind': config_get(cfg, 'data.kind'), 'label': corpus_label(cfg),
                     'classes': list(config_get(cfg, 'data.classes', ()) or ())}}


def protocol_budgets(cfg: Mapping[str, Any] | None) -> list[str]:
  """Markdown bullet lines, one per configured protocol."""
  cfg = cfg or {}
  lines = []
  for protocol in config_get(cfg, 'eval.protocols', ('paper', 'strict')):
    if protocol == 'paper':
      lines.append(f'- **paper**: {paper_budget(cfg)}.')
    elif protocol == 'strict':
      lines.append('- **strict**: no label of the test speaker; the dev-selected checkpoint '
                   'predicts as is.')
    else:
      lines.append(f'- **{protocol}**: see mmtl_jax.ser.evaluate.')
  return lines


__all__ = [
    'budget_record', 'config_get', 'corpus_label', 'paper_budget', 'protocol_budgets',
    'training_budget',
]
