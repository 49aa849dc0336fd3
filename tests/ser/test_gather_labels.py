"""gather: rows of two workdirs that share a basename are told apart (path), and every row
names its corpus, classes and training / fine-tuning budget."""

import ml_collections

from mmtl_jax.ser import results


def _workdir(path, kind, classes, steps, finetune_steps, ua):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict({'kind': kind, 'aux_tasks': ('valence',),
                                      'classes': classes})
  c.meta = ml_collections.ConfigDict({'mode': 'first_order'})
  c.train = ml_collections.ConfigDict({'steps': steps})
  c.eval = ml_collections.ConfigDict({'finetune_steps': finetune_steps,
                                      'finetune_unit': 'steps', 'finetune_optimizer': 'sgd'})
  recs = [results.fold_record('mmtl', 'paper', 1, [0, 1], [0, 1 if ua else 0])]
  results.write_results(path, c, results.aggregate_runs(recs, list(classes)))
  return path


def test_same_basename_rows_are_distinguishable(tmp_path):
  a = _workdir(tmp_path / 'iemocap' / 'run', 'iemocap', ('neu', 'ang'), 3000, 5, True)
  b = _workdir(tmp_path / 'emodb' / 'run', 'manifest', ('neutral', 'anger'), 300, 0, False)
  table = results.gather([a, b])
  rows = [l for l in table.splitlines() if '| mmtl |' in l]
  assert len(rows) == 2 and rows[0] != rows[1]
  label_a, label_b = (r.split('|')[1].strip() for r in rows)
  assert label_a != label_b and label_a.endswith('iemocap/run') and label_b.endswith('emodb/run')
  assert 'Corpus' in table.splitlines()[0] and 'Classes' in table.splitlines()[0]
  assert '| iemocap | neu, ang | 3000 steps; fine-tune 5 steps sgd |' in rows[0]
  assert '| manifest | neutral, anger | 300 steps; no fine-tuning |' in rows[1]
  twice = results.gather([a, a])  # the same workdir given twice: still two labels
  labels = [l.split('|')[1].strip() for l in twice.splitlines() if '| mmtl |' in l]
  assert len(set(labels)) == 2


def test_distinct_basenames_keep_short_labels(tmp_path):
  a = _workdir(tmp_path / 'x' / 'va', 'iemocap', ('neu', 'ang'), 10, 5, True)
  b = _workdir(tmp_path / 'y' / 'vd', 'iemocap', ('neu', 'ang'), 10, 5, True)
  labels = [l.split('|')[1].strip() for l in results.gather([a, b]).splitlines()
            if '| mmtl |' in l]
  assert labels == ['va', 'vd']
