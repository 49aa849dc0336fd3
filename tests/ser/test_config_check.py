"""check_config: the shipped configs pass, and every problem of a config is reported at once,
naming the field, what is wrong and the value (no training, no feature extraction)."""

import ml_collections
import pytest

from mmtl_jax.configs import aux_tasks, base, demo, emodb, iemocap, synthetic
from mmtl_jax.ser import config_check
from mmtl_jax.ser.config_check import ConfigError, check_config


def problems_of(config):
  """The problem lines of `config`; fails the test if check_config raises nothing."""
  with pytest.raises(ConfigError) as info:
    check_config(config)
  lines = str(info.value).splitlines()[1:]
  assert lines == list(info.value.problems)  # one problem per line, after the header
  return lines


def emodb_config():
  c = emodb.get_config()
  c.data.manifest.path = '/data/emodb/annotations.csv'  # never opened by the check
  return c


@pytest.mark.parametrize('make', [
    demo.get_config, base.get_config, synthetic.get_config, iemocap.get_config, emodb_config,
    lambda: aux_tasks.get_config('VA'), lambda: aux_tasks.get_config('VD,demo'),
], ids=['demo', 'base', 'synthetic', 'iemocap', 'emodb', 'aux_tasks_VA', 'aux_tasks_VD_demo'])
def test_shipped_configs_pass(make):
  check_config(make())  # a false alarm here blocks every run of that config


def test_tiny_test_config_passes(tiny_config):
  check_config(tiny_config('/tmp/unused_corpus_root'))


@pytest.mark.parametrize('field,value,line', [
    ('steps', 0, 'train.steps: must be >= 1 (got 0)'),
    ('steps', -5, 'train.steps: must be >= 1 (got -5)'),
    ('segments_per_speaker', 0, 'train.segments_per_speaker: must be >= 1 (got 0)'),
    ('eval_every', 0, 'train.eval_every: must be >= 1 (got 0)'),  # was ZeroDivisionError
])
def test_counts_below_one_are_reported(field, value, line):
  c = demo.get_config()
  c.train[field] = value
  assert problems_of(c) == [line]


def test_all_problems_in_one_message():
  c = demo.get_config()
  c.train.steps = 0
  c.train.eval_every = 0
  c.meta.mode = 'nope'
  c.meta.gamma = 0.0
  c.eval.finetune_steps = -1
  c.folds.scheme = 'random'
  lines = problems_of(c)
  assert len(lines) == 6, lines
  for field in ('train.steps', 'train.eval_every', 'meta.mode', 'meta.gamma',
                'eval.finetune_steps', 'folds.scheme'):
    assert sum(line.startswith(field + ':') for line in lines) == 1, (field, lines)


@pytest.mark.parametrize('section,field,known', [
    ('meta', 'mode', ('exact', 'first_order', 'reptile')),
    ('meta', 'strategy', ('auto', 'vmap', 'map', 'loop', 'sharded')),
    ('model', 'name', ('cnn_bilstm',)),
    ('data', 'kind', ('iemocap', 'synthetic', 'manifest')),
])
def test_unknown_names_are_reported_with_the_known_ones(section, field, known):
  c = demo.get_config()
  c[section][field] = 'bogus'
  (line,) = [l for l in problems_of(c) if l.startswith(f'{section}.{field}:')]
  assert "(got 'bogus')" in line
  for name in known:
    assert repr(name) in line, line


def test_unknown_system_is_reported_with_the_known_ones():
  c = demo.get_config()
  c.train.models = ('mmtl', 'transformer')
  (line,) = problems_of(c)
  assert line.startswith("train.models: 'transformer' is not one of (")
  assert all(repr(n) in line for n in ('mmtl', 'cnn_lstm', 'cnn_lstm_mtl')), line


def test_registered_names_are_accepted():
  config_check.MODES.register('test_only_mode', lambda *a: None)
  try:
    c = demo.get_config()
    c.meta.mode = 'test_only_mode'
    check_config(c)  # the registry is read at check time, not copied at import
  finally:
    config_check.MODES.unregister('test_only_mode')


def test_repeated_seeds_and_folds_are_reported():
  c = demo.get_config()
  c.train.seeds = (0, 1, 0)
  c.folds.which = (2, 2, -1)
  lines = problems_of(c)
  assert 'train.seeds: repeated entries 0 (got (0, 1, 0))' in lines, lines
  assert 'folds.which: repeated entries 2 (got (2, 2, -1))' in lines, lines
  assert 'folds.which: entries must be fold indices >= 0 (got -1)' in lines, lines
  assert len(lines) == 3, lines


def test_repeated_models_and_aux_tasks_are_reported():
  c = demo.get_config()
  c.train.models = ('mmtl', 'mmtl')
  c.data.aux_tasks = ('valence', 'valence')
  lines = problems_of(c)
  assert any(l.startswith("train.models: repeated entries 'mmtl'") for l in lines), lines
  assert any(l.startswith("data.aux_tasks: repeated entries 'valence'") for l in lines), lines


def test_empty_lists_and_enums_are_reported():
  c = demo.get_config()
  c.eval.protocols = ()
  c.data.classes = ()
  c.eval.finetune_optimizer = 'rmsprop'
  c.data.iemocap.selection = 'both'
  c.model.dtype = 'int8'
  lines = problems_of(c)
  for start in ('eval.protocols: must not be empty', 'data.classes: must not be empty',
                'eval.finetune_optimizer: must be one of', 'data.iemocap.selection: must be',
                'model.dtype: must be one of'):
    assert any(l.startswith(start) for l in lines), (start, lines)
  c = demo.get_config()
  c.eval.protocols = ('paper', 'lenient')
  (line,) = problems_of(c)
  assert line.startswith("eval.protocols: 'lenient' is not one of ('paper', 'strict')"), line


def test_more_vad_bins_than_outputs_are_reported():
  c = demo.get_config()
  c.data.iemocap.vad_edges = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)  # 5 bins, 4 outputs
  (line,) = problems_of(c)
  assert line.startswith('data.iemocap.vad_edges: 5 bins need model.num_outputs >= 5'), line


def test_more_manifest_bins_than_outputs_are_reported():
  c = emodb_config()
  c.data.manifest.aux_columns.recognition_pct = (0.0, 20.0, 40.0, 60.0, 80.0, 101.0)
  (line,) = problems_of(c)
  assert line.startswith('data.manifest.aux_columns.recognition_pct: 5 bins need '
                         'model.num_outputs >= 5'), line


def test_more_classes_than_outputs_are_reported():
  c = demo.get_config()
  c.data.classes = ('neu', 'ang', 'hap', 'sad', 'fru')
  (line,) = problems_of(c)
  assert line.startswith('data.classes: 5 classes need model.num_outputs >= 5'), line


def test_manifest_without_path_or_aux_column_is_reported():
  c = emodb.get_config()  # path '' as shipped
  c.data.aux_tasks = ('recognition_pct', 'arousal')
  lines = problems_of(c)
  assert lines[0].startswith("data.manifest.path: data.kind='manifest' needs the CSV file"), lines
  assert lines[1].startswith("data.manifest.aux_columns: no entry for aux task 'arousal'"), lines
  assert len(lines) == 2, lines


def test_partial_config_is_checked_without_crashing():
  c = ml_collections.ConfigDict({'train': {'steps': 0}, 'meta': {'mode': None}})
  assert problems_of(c) == ['train.steps: must be >= 1 (got 0)']
  check_config(ml_collections.ConfigDict())


def test_config_error_is_a_value_error():
  assert issubclass(ConfigError, ValueError)  # callers that catch ValueError still do
