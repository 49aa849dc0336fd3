"""Synthetic corpus -> reader round trip, feature store cache, skipped wavs, task sampler."""

import filecmp
import json
import os

import numpy as np
import pytest

from mmtl_jax.configs import base
from mmtl_jax.data import corpus, folds, sampler, store as store_lib, synthetic

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
  assert 'skipped: 1' in store_lib.format_summary(s)


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


def test_sampler_with_replacement_and_pooled_weights(small_store):
  c = small_store_config('unused')
  c.train.segments_per_speaker = 64  # more than any speaker has
  c.folds.class_weights = 'pooled'
  ts = sampler.TaskSampler(small_store, ['Ses01F', 'Ses02F'], c, seed=0)
  b = ts.batch(0)
  assert b['x'].shape[:2] == (2, 64)
  pooled = folds.class_weights(small_store.label[small_store.rows(['Ses01F', 'Ses02F'])], 4)
  np.testing.assert_array_equal(b['target_weight'], np.stack([pooled, pooled]))
