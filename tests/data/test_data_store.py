"""Synthetic corpus -> reader round trip, feature store cache, skipped wavs, task sampler."""

import filecmp
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from mmtl_jax.configs import base
from mmtl_jax.data import corpus, folds, sampler, store as store_lib, synthetic
from mmtl_jax.data import features as features_lib
from mmtl_jax.run import tmp_dirs

REPO = pathlib.Path(__file__).resolve().parents[2]
IMPRO = {'neu': 2, 'ang': 1, 'hap': 1, 'sad': 2, 'exc': 1, 'fru': 1, 'xxx': 1}
SCRIPT = {'neu': 1, 'hap': 1}


def write_small(root, seed=0):
  return synthetic.write_corpus(str(root), seed=seed, sessions=2, impro_counts=IMPRO,
                                script_counts=SCRIPT, min_duration=0.8, max_duration=2.5)


def small_store_config(root):
  """Paper-shaped but small: 8 kHz, 50 bins of 40 Hz, 1 s segments of 50 frames."""
  c = base.get_config()
  c.data.kind = 'synthetic'
  c.data.root = str(root)
  c.data.iemocap.sessions = (1, 2)
  c.features.sample_rate = 8000
  c.features.n_fft = 200
  c.features.win_ms = 25.0
  c.features.fmax = 2000.0
  c.features.n_frames = 50
  c.features.max_segment_s = 1.0
  c.features.workers = 1
  c.train.segments_per_speaker = 8
  return c


@pytest.fixture(scope='module')
def small_corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp('synthetic')
  return root, write_small(root)


@pytest.fixture(scope='module')
def small_store(small_corpus, tmp_path_factory):
  root, _ = small_corpus
  return store_lib.build_feature_store(small_store_config(root),
                                       str(tmp_path_factory.mktemp('work')))


def test_round_trip_counts_equal_what_was_written(small_corpus):
  root, info = small_corpus
  c = small_store_config(root)
  c.data.iemocap.selection = 'all'
  c.data.classes = tuple(IMPRO)
  utts, problems = corpus.read_corpus(c)
  assert problems == [] and len(utts) == info['utterances'] == 2 * 2 * (9 + 2)
  assert sorted({u.speaker for u in utts}) == ['Ses01F', 'Ses01M', 'Ses02F', 'Ses02M']
  for spk in ('Ses01F', 'Ses02M'):
    mine = [u for u in utts if u.speaker == spk and 'impro' in u.dialog]
    assert {k: sum(u.label == k for u in mine) for k in IMPRO} == IMPRO
  assert all(os.path.exists(u.path) for u in utts)
  values = {v for u in utts for v in u.aux_raw}
  assert {2.0, 3.0, 4.0} <= values  # values exactly on bin edges
  assert info['unreadable'] in {u.path for u in utts}
  utts4, _ = corpus.read_corpus(small_store_config(root))  # paper selection: impro, 4 classes
  assert len(utts4) == 4 * 6


def test_writer_is_deterministic(small_corpus, tmp_path):
  root, _ = small_corpus
  write_small(tmp_path)
  cmp = filecmp.dircmp(root / 'IEMOCAP_full_release', tmp_path / 'IEMOCAP_full_release')

  def same(d):
    mismatch = filecmp.cmpfiles(d.left, d.right, d.common_files, shallow=False)[1:]
    return not any(mismatch) and not d.left_only and not d.right_only and \
        all(same(s) for s in d.subdirs.values())

  assert same(cmp)


def test_make_synthetic_console_script_is_an_absl_entry_point():
  """pyproject's `mmtl-make-synthetic` target exists and parses its command line with absl
  (run in a subprocess: its flags must not enter this process's absl FLAGS)."""
  tomllib = pytest.importorskip('tomllib')  # Python >= 3.11
  with open(REPO / 'pyproject.toml', 'rb') as f:
    target = tomllib.load(f)['project']['scripts']['mmtl-make-synthetic']
  module, function = target.split(':')
  # As the console script calls it: no arguments; absl reads sys.argv (here ['-c', '--seed=1']).
  done = subprocess.run([sys.executable, '-c', f'from {module} import {function}; {function}()',
                         '--seed=1'], capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 1 and 'exactly one ROOT' in done.stderr, done.stderr


@pytest.mark.slow  # measured: writes the default synthetic corpus
def test_default_corpus_has_what_real_data_has(tmp_path):
  c = base.get_config()
  c.data.kind = 'synthetic'
  c.data.iemocap.selection = 'all'
  c.data.classes = ('neu', 'ang', 'hap', 'sad', 'exc', 'fru', 'xxx')
  utts, _ = corpus.read_corpus(c, workdir=str(tmp_path))
  assert 300 <= len(utts) <= 500
  assert len({u.speaker for u in utts}) == 10
  dialogs = {u.dialog for u in utts}
  assert {'Ses03M_impro05a', 'Ses05M_script01_1b'} <= dialogs
  assert 'Ses01F_impro01_M000' in {u.utt_id for u in utts}
  assert {5.0, 2.0, 4.0} <= {v for u in utts for v in u.aux_raw}
  # Reused, not rewritten, on the next read.
  # Written to <workdir>/synthetic_corpus, since data.root is empty.
  marker = tmp_path / 'synthetic_corpus' / 'IEMOCAP_full_release' / synthetic.MARKER
  mtime = marker.stat().st_mtime_ns
  corpus.read_corpus(c, workdir=str(tmp_path))
  assert marker.stat().st_mtime_ns == mtime
  c.data.synthetic.seed = 1
  with pytest.raises(ValueError, match='seed 0'):
    corpus.read_corpus(c, workdir=str(tmp_path))


def test_store_contents_and_skipped_wav(small_corpus, small_store):
  _, info = small_corpus
  s = small_store
  assert not s.cache_hit
  n = len(s)
  assert s.features.shape == (n, 50, 50) and s.features.dtype == np.float16
  assert s.utt_index.shape == s.speaker.shape == s.label.shape == (n,)
  assert s.aux.shape == (n, 3) and s.aux.dtype == np.int32
  assert s.speakers == ['Ses01F', 'Ses01M', 'Ses02F', 'Ses02M']
  assert len(s.utterances) == 4 * 6 - 1
  assert [x['path'] for x in s.manifest['skipped']] == [info['unreadable']]
  assert 'unreadable' in s.manifest['skipped'][0]['reason']
  assert info['unreadable'] not in {u['path'] for u in s.utterances}
  counts = s.manifest['counts']
  assert sum(sum(c.values()) for c in counts['segments'].values()) == n
  assert counts['utterances']['Ses02F']['neu'] == 1  # of 2: one is the unreadable wav
  assert n > len(s.utterances)  # utterances longer than 1 s were cut
  for i, u in enumerate(s.utterances):
    rows = np.flatnonzero(s.utt_index == i)
    assert len(rows) == u['n_segments']
    assert {s.speakers[k] for k in s.speaker[rows]} == {u['speaker']}
  assert set(s.rows('Ses01M')) == set(np.flatnonzero(s.speaker == 1))
  with open(s.manifest_path) as f:
    assert json.load(f)['config_hash'] == os.path.basename(s.directory)
  assert not [d for d in os.listdir(os.path.dirname(s.directory)) if d.startswith('.tmp')]
  summary = store_lib.format_summary(s)
  assert 'skipped: 1 (1 on purpose)' in summary
  assert f"{info['unreadable']}: unreadable" in summary and '[deliberate: ' in summary


def test_store_records_each_segments_valid_frames(small_corpus, small_store, tmp_path,
                                                  monkeypatch):
  s = small_store
  assert s.length.shape == (len(s),) and s.length.dtype == np.int32
  c = small_store_config(small_corpus[0])
  for i in (0, len(s.utterances) - 1):
    _, lengths = features_lib.file_segments(s.utterances[i]['path'], c.features)
    np.testing.assert_array_equal(s.length[s.utt_index == i], lengths)
  # Short segments are padded: 0.2 s = 21 frames of 50 at a 10 ms hop.
  _, lengths = features_lib.waveform_segments(np.ones(1600, np.float32), c.features)
  assert lengths.tolist() == [21]
  # The version is part of the key: stores without lengths are never reused...
  utts, _ = corpus.read_corpus(c)
  key = store_lib.config_hash(c, utts)
  monkeypatch.setattr(features_lib, 'VERSION', 1)
  assert store_lib.config_hash(c, utts) != key
  # ... and one opened directly says it is too old.
  old = tmp_path / 'old'
  shutil.copytree(s.directory, old)
  os.remove(old / 'length.npy')
  with pytest.raises(ValueError, match='older version'):
    store_lib.load_store(str(old))


@pytest.mark.slow  # subprocesses: 2 spawned feature workers
def test_cache_hit_and_miss(small_corpus, small_store):
  root, _ = small_corpus
  workdir = os.path.dirname(os.path.dirname(small_store.directory))
  c = small_store_config(root)
  c.features.workers = 2  # not part of the key
  hit = store_lib.build_feature_store(c, workdir)
  assert hit.cache_hit and hit.manifest_path == small_store.manifest_path
  np.testing.assert_array_equal(hit.features, small_store.features)
  c.features.n_frames = 40
  miss = store_lib.build_feature_store(c, workdir)  # 2 spawned workers
  assert not miss.cache_hit and miss.directory != small_store.directory
  assert miss.features.shape[1] == 40
  np.testing.assert_array_equal(miss.label, small_store.label)
  np.testing.assert_array_equal(miss.features[:, :40], small_store.features[:, :40])


def test_sampler_contract_and_determinism(small_store):
  c = small_store_config('unused')
  speakers = ['Ses01F', 'Ses02M', 'Ses01M']
  ts = sampler.TaskSampler(small_store, speakers, c, seed=3)
  b = ts.batch(7)
  assert b['x'].shape == (3, 8, 50, 50) and b['x'].dtype == np.float32
  assert b['lengths'].shape == (3, 8) and b['lengths'].dtype == np.int32
  assert b['target'].shape == (3, 8) and b['target'].dtype == np.int32
  assert b['aux'].shape == (3, 8, 3) and b['aux'].dtype == np.int32
  assert b['target_weight'].shape == (3, 4) and b['target_weight'].dtype == np.float32
  assert b['aux_weight'].shape == (3, 3, 4) and b['aux_weight'].dtype == np.float32
  again = sampler.TaskSampler(small_store, speakers, c, seed=3).batch(7)
  for k in b:
    np.testing.assert_array_equal(b[k], again[k])
  assert not np.array_equal(ts.indices(8), ts.indices(7))
  assert not np.array_equal(sampler.TaskSampler(small_store, speakers, c, 4).indices(7),
                            ts.indices(7))
  idx = ts.indices(7)
  for t, spk in enumerate(speakers):
    assert set(small_store.speaker[idx[t]]) == {small_store.speaker_index(spk)}
    np.testing.assert_array_equal(b['target'][t], small_store.label[idx[t]])
    np.testing.assert_array_equal(
        b['target_weight'][t], folds.class_weights(small_store.label[small_store.rows(spk)], 4))
  np.testing.assert_array_equal(b['x'][1, 2], small_store.features[idx[1, 2]].astype(np.float32))
  np.testing.assert_array_equal(b['lengths'], small_store.length[idx])


def test_sampler_with_replacement_and_pooled_weights(small_store):
  c = small_store_config('unused')
  c.train.segments_per_speaker = 64  # more than any speaker has
  c.folds.class_weights = 'pooled'
  ts = sampler.TaskSampler(small_store, ['Ses01F', 'Ses02F'], c, seed=0)
  b = ts.batch(0)
  assert b['x'].shape[:2] == (2, 64)
  pooled = folds.class_weights(small_store.label[small_store.rows(['Ses01F', 'Ses02F'])], 4)
  np.testing.assert_array_equal(b['target_weight'], np.stack([pooled, pooled]))


_KILLABLE = '''
import sys, time
from mmtl_jax.data import features as features_lib

_segments = features_lib.file_segments


def slow_segments(path, features):  # module level: forked and spawned workers both get it
  time.sleep(0.5)
  return _segments(path, features)


features_lib.file_segments = slow_segments

if __name__ == '__main__':
  from mmtl_jax.configs import base
  from mmtl_jax.data import store
  c = base.get_config()
  c.data.kind, c.data.root, c.data.iemocap.sessions = 'synthetic', sys.argv[1], (1, 2)
  c.features.update(sample_rate=8000, n_fft=200, win_ms=25.0, fmax=2000.0, n_frames=50,
                    max_segment_s=1.0, workers=2)
  store.build_feature_store(c, sys.argv[2])
'''


def _gone(process):
  try:
    return process.status() == psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return True


def _workers(parent):
  """The feature workers among the children of `parent` (not multiprocessing's tracker)."""
  out = []
  for p in parent.children(recursive=True):
    try:
      if 'resource_tracker' not in ' '.join(p.cmdline()):
        out.append(p)
    except psutil.Error:
      pass
  return out


def _wait_for(condition, seconds):
  deadline = time.monotonic() + seconds
  while not condition() and time.monotonic() < deadline:
    time.sleep(0.1)
  return condition()


@pytest.mark.slow  # subprocess, and its spawned workers
@pytest.mark.parametrize('signum', [signal.SIGKILL, signal.SIGTERM])
def test_killed_build_leaves_no_workers_and_no_tmp_dir(small_corpus, tmp_path, signum):
  """A build with 2 workers killed mid-way: its workers end with it, and no .tmp-* directory
  survives (SIGTERM: removed on the way out; SIGKILL: by the next build)."""
  root, _ = small_corpus
  script = tmp_path / 'build.py'
  script.write_text(_KILLABLE)
  workdir = tmp_path / 'work'
  features_dir = workdir / 'features'
  tmp_dirs = lambda: [d for d in os.listdir(features_dir) if d.startswith('.tmp-')] \
      if features_dir.exists() else []
  proc = subprocess.Popen([sys.executable, str(script), str(root), str(workdir)])
  try:
    parent = psutil.Process(proc.pid)
    started = lambda: tmp_dirs() and len(_workers(parent)) >= 2
    assert _wait_for(lambda: proc.poll() is not None or started(), 240) and started(), \
        f'no workers started (exit status {proc.poll()})'
    children = parent.children(recursive=True)
    proc.send_signal(signum)
    proc.wait(timeout=60)
  finally:
    proc.kill()
  assert _wait_for(lambda: all(_gone(p) for p in children), 30), [
      p for p in children if not _gone(p)]
  assert proc.returncode == (-signal.SIGKILL if signum == signal.SIGKILL else 143)
  if signum == signal.SIGTERM:
    assert tmp_dirs() == []
  else:
    assert len(tmp_dirs()) == 1  # what the next build must clean up
    store_lib.build_feature_store(small_store_config(root), str(workdir))
    assert tmp_dirs() == []


def test_remove_stale_tmp_keeps_live_and_foreign_builds(tmp_path):
  done = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  dead, live = int(done.stdout), os.getppid()  # the parent started before the directory
  host = tmp_dirs.host_name()
  names = {'dead': f'.tmp-{"a" * 16}-{host}-{dead}', 'live': f'.tmp-{"b" * 16}-{host}-{live}',
           'foreign': f'.tmp-{"c" * 16}-not{host}-{dead}', 'store': 'c' * 16}
  for name in names.values():
    (tmp_path / name).mkdir()
  assert tmp_dirs.remove_stale_tmp(str(tmp_path)) == [str(tmp_path / names['dead'])]
  assert sorted(os.listdir(tmp_path)) == sorted(v for k, v in names.items() if k != 'dead')
