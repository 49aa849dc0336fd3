"""Tests of mmtl_jax.run.metric_log: JSON lines and TensorBoard event files."""

import glob
import json
import math
import os

import numpy as np
import pytest

from mmtl_jax.run import metric_log

from helpers import plugin_tags, read_events, scalar_events


def test_jsonl_and_event_file(tmp_path):
  with metric_log.MetricWriter(tmp_path / 'logs', fold=2, enabled=True) as writer:
    writer.write_scalars(1, {'loss': np.float32(0.5), 'dev_UA': 0.25})
    # Flushed per line: readable before close.
    rows = metric_log.read_jsonl(writer.jsonl_path)
    assert rows[0]['step'] == 1 and rows[0]['fold'] == 2
    writer.write_scalars(2, {'loss': float('nan')}, fold='2-swap')

  rows = metric_log.read_jsonl(tmp_path / 'logs' / 'metrics.jsonl')
  assert [(r['step'], r['fold']) for r in rows] == [(1, 2), (2, '2-swap')]
  assert rows[0]['loss'] == 0.5 and rows[0]['dev_UA'] == 0.25
  assert rows[1]['loss'] is None  # NaN -> null: strict JSON
  assert all('wall_time' in r for r in rows)
  for line in (tmp_path / 'logs' / 'metrics.jsonl').read_text().splitlines():
    json.loads(line)  # every line is valid JSON on its own

  (event_file,) = glob.glob(str(tmp_path / 'logs' / 'events.out.tfevents.*'))
  events = scalar_events(event_file)
  # The tags carry no fold: one directory is one TensorBoard run, and runs overlay by tag.
  assert (1, 'loss', 0.5) in events
  assert (1, 'dev_UA', 0.25) in events
  assert any(s == 2 and t == 'loss' and math.isnan(v) for s, t, v in events)


def test_hparams_and_text_go_into_the_run_directory_itself(tmp_path):
  with metric_log.MetricWriter(tmp_path / 'logs', enabled=True) as writer:
    writer.write_hparams({'meta.gamma': 0.003, 'system': 'mmtl', 'train.models': ['a', 'b'],
                          'flag': True}, metrics=['dev_UA_strict'])
    writer.write_text('config', '    a: 1')
  # One event file and no subdirectory (add_hparams would open a second run)
  assert not [n for n in os.listdir(tmp_path / 'logs') if os.path.isdir(tmp_path / 'logs' / n)]
  (event_file,) = glob.glob(str(tmp_path / 'logs' / 'events.out.tfevents.*'))
  tags = plugin_tags(event_file)
  assert tags['hparams'] == ['_hparams_/experiment', '_hparams_/session_start_info',
                             '_hparams_/session_end_info']
  assert tags['text'] == ['config/text_summary']
  from tensorboardX.proto import plugin_hparams_pb2  # pylint: disable=g-import-not-at-top
  (start,) = [v for e in read_events(event_file) for v in e.summary.value
              if v.tag == '_hparams_/session_start_info']
  data = plugin_hparams_pb2.HParamsPluginData.FromString(start.metadata.plugin_data.content)
  values = data.session_start_info.hparams
  assert values['meta.gamma'].number_value == pytest.approx(0.003)
  assert values['train.models'].string_value == '["a", "b"]'
  assert values['flag'].bool_value


def test_append_on_resume_and_truncated_last_line(tmp_path):
  with metric_log.MetricWriter(tmp_path, tensorboard=False, enabled=True) as w:
    w.write_scalars(1, {'a': 1})
  with metric_log.MetricWriter(tmp_path, tensorboard=False, enabled=True) as w:
    w.write_scalars(2, {'a': 2})
  path = tmp_path / 'metrics.jsonl'
  with open(path, 'a') as f:
    f.write('{"step": 3, "a"')  # a crash mid-write
  assert [r['step'] for r in metric_log.read_jsonl(path)] == [1, 2]
  assert not glob.glob(str(tmp_path / 'events.out.tfevents.*'))


def test_bad_metrics_rejected(tmp_path):
  with metric_log.MetricWriter(tmp_path, tensorboard=False, enabled=True) as w:
    with pytest.raises(ValueError, match='numeric scalar'):
      w.write_scalars(1, {'v': np.ones(3)})
    with pytest.raises(ValueError, match='numeric scalar'):
      w.write_scalars(1, {'v': 'high'})
    with pytest.raises(ValueError, match='reserved'):
      w.write_scalars(1, {'step': 1})
  with pytest.raises(ValueError, match='closed'):
    w.write_scalars(1, {'v': 1})
  assert os.path.getsize(tmp_path / 'metrics.jsonl') == 0


def test_disabled_writer_writes_nothing(tmp_path):
  with metric_log.MetricWriter(tmp_path / 'off', enabled=False) as w:
    w.write_scalars(1, {'a': 1.0})
  assert not (tmp_path / 'off').exists()
