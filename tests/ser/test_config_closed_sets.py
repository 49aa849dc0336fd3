"""check_config's closed sets: every field whose valid values are a closed set (storage
dtypes, booleans, seeds, IEMOCAP sessions, model shapes) is refused outside it, before any
feature is extracted."""

import pytest

from mmtl_jax.configs import base, demo, emodb
from mmtl_jax.ser.config_check import ConfigError, check_config


def problems(config):
  with pytest.raises(ConfigError) as info:
    check_config(config)
  return info.value.problems


@pytest.mark.parametrize('field,value,fragment', [
    ('features.dtype', 'uint8', 'features.dtype: must be one of'),  # wrapped negatives to 253
    ('features.dtype', 'int16', 'features.dtype: must be one of'),
    ('features.dtype', 'float8', 'features.dtype: must be one of'),
    ('seed', -1, 'seed: must be an integer in [0, 2**32)'),
    ('seed', 2**32, 'seed: must be an integer in [0, 2**32)'),
    ('seed', 1.5, 'seed: must be an integer in [0, 2**32)'),
    ('data.synthetic.seed', -3, 'data.synthetic.seed: must be an integer in [0, 2**32)'),
    ('train.seeds', (0, -1), 'train.seeds: entries must be integers in [0, 2**32)'),
    ('folds.swap', 'False', 'folds.swap: must be True or False'),  # a truthy string
    ('meta.remat', 1, 'meta.remat: must be True or False'),
    ('data.iemocap.merge_exc', 'no', 'data.iemocap.merge_exc: must be True or False'),
    ('data.iemocap.sessions', (1, 6), 'data.iemocap.sessions: entries must be in 1..5'),
    ('data.iemocap.sessions', (), 'data.iemocap.sessions: must not be empty'),
    ('model.dropout', 1.0, 'model.dropout: must be a number in [0, 1)'),
    ('model.dropout', -0.1, 'model.dropout: must be a number in [0, 1)'),
    ('model.lstm_hidden', 0, 'model.lstm_hidden: must be >= 1'),
    ('model.fc_hidden', 0, 'model.fc_hidden: must be >= 1'),
    ('model.conv_features', (16, 0, 32), 'model.conv_features: entries must be integers >= 1'),
    ('model.conv_kernels', ((12, 16), (8, 12)), 'model.conv_kernels: one (time, freq) pair'),
    ('model.conv_kernels', ((12, 16), (8, 0), (5, 7)), 'model.conv_kernels: one (time, freq)'),
])
def test_values_outside_a_closed_set_are_refused(field, value, fragment):
  config = base.get_config()
  node = config
  for key in field.split('.')[:-1]:
    node = node[key]
  with node.ignore_type():
    node[field.split('.')[-1]] = value
  found = problems(config)
  assert any(p.startswith(fragment) for p in found), found
  assert len(found) == 1, found  # no knock-on problem from the same field


@pytest.mark.parametrize('dtype', ['float16', 'float32', 'float64'])
def test_float_storage_dtypes_pass(dtype):
  config = demo.get_config()
  config.features.dtype = dtype
  check_config(config)


def test_manifest_configs_do_not_check_iemocap_sessions():
  config = emodb.get_config()
  config.data.manifest.path = '/data/emodb/annotations.csv'
  config.data.iemocap.sessions = (9,)  # not read by the manifest corpus
  check_config(config)
