"""The few-shot protocol: test characters never leak into training or validation episodes,
settings per way, the validation search's choice, trivial baselines, and statistics over
seeds and pairs of methods."""

import hashlib
import json
import os

import numpy as np
import pytest

from mmtl_jax.configs import fewshot as fewshot_config
from mmtl_jax.fewshot import baselines, episodes, experiment, glyphs, loop, report
from mmtl_jax.run import stats
from mmtl_jax.fewshot import systems


def _hashes(images):
  return {hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images}


def test_test_characters_and_their_rotations_never_appear_in_training_or_validation():
  chars, samples, size = 40, 6, 12
  alphabet = glyphs.render_alphabet(chars, samples=samples, size=size, seed=7)
  splits = episodes.split_classes(chars, (0.6, 0.2, 0.2))
  test_chars = np.unique(glyphs.split_class(splits['test'])[0])
  # Every image of every test character, in all four rotations, as the float32 pixels an
  # episode holds.
  every = glyphs.class_images(
      alphabet, glyphs.class_of(np.repeat(test_chars, 4), np.tile(np.arange(4), len(test_chars))),
      np.tile(np.arange(samples), (4 * len(test_chars), 1)))
  forbidden = _hashes((every.reshape(-1, size, size, 1) / 255.0).astype(np.float32))
  seen_test = set()
  for split in ('train', 'val', 'test'):
    for step in range(30):
      rng = episodes.episode_rng(0, split, step)
      chosen = episodes.sample_classes(episodes.episode_rng(0, split, step), splits[split], 3, 5)
      batch = episodes.sample_tasks(alphabet, splits[split], rng, tasks=3, way=5, shot=1,
                                    query=2)
      images = np.concatenate([batch['support_x'], batch['query_x']], 1).reshape(
          -1, size, size, 1)
      chars_drawn = set(glyphs.split_class(chosen)[0].ravel().tolist())
      if split == 'test':
        seen_test |= _hashes(images)
        assert chars_drawn <= set(test_chars.tolist())
      else:
        assert not chars_drawn & set(test_chars.tolist()), (split, step)
        assert not _hashes(images) & forbidden, (split, step)
  assert seen_test <= forbidden and seen_test  # the check can see test images when they come


def test_the_shipped_alphabets_split_keeps_test_characters_out_of_training_and_validation():
  # The toy check above at the shipped scale (configs/fewshot.py's data: 1,000 characters,
  # 20 drawings, 28 x 28, split 70/10/20); rendering takes about 2 s on 2 cores.
  data = fewshot_config.get_config().data
  alphabet, splits = experiment.build_alphabet(data)
  chars = {k: glyphs.split_class(v)[0] for k, v in splits.items()}
  assert [len(splits[k]) for k in ('train', 'val', 'test')] == [2800, 400, 800]
  for name, cls in splits.items():  # all four rotations of each of its characters
    assert len(cls) == 4 * len(np.unique(chars[name])), name
  assert not set(chars['test'].tolist()) & set(chars['train'].tolist() + chars['val'].tolist())
  assert not set(chars['train'].tolist()) & set(chars['val'].tolist())
  samples = alphabet.shape[1]
  pixels = lambda cls: glyphs.class_images(
      alphabet, cls, np.tile(np.arange(samples), (len(cls), 1))).reshape(
          -1, data.size, data.size)
  forbidden = _hashes(pixels(splits['test']).astype(np.float32) / 255.0)
  assert len(forbidden) == 800 * samples  # every test image is distinct, so the check can see
  assert not _hashes(pixels(np.concatenate([splits['train'], splits['val']])).astype(
      np.float32) / 255.0) & forbidden  # no training or validation image is a test image
  for split in ('train', 'val', 'test'):
    for step in range(5):
      batch = episodes.sample_tasks(alphabet, splits[split], episodes.episode_rng(0, split, step),
                                    tasks=2, way=20, shot=1, query=5)
      drawn = _hashes(np.concatenate([batch['support_x'], batch['query_x']], 1).reshape(
          -1, data.size, data.size))
      # test episodes show the check can see a test image when one comes
      assert (drawn <= forbidden) if split == 'test' else not drawn & forbidden, (split, step)


def test_validation_and_test_episodes_come_from_their_own_split():
  alphabet = glyphs.render_alphabet(40, samples=6, size=12, seed=7)
  splits = episodes.split_classes(40, (0.6, 0.2, 0.2))
  cfg = fewshot_config.get_config().eval
  cfg.episodes, cfg.chunk, cfg.query = 6, 3, 2
  seen = {}

  def score(batch, i):
    seen.setdefault('n', 0)
    seen['n'] += len(batch['support_x'])
    return np.zeros(len(batch['support_x']))

  for split in ('val', 'test'):
    out = loop.evaluate_with(score, alphabet, splits[split], way=5, shot=1, eval_config=cfg,
                             split=split)
    assert out['episodes'] == 6
  a = episodes.sample_tasks(alphabet, splits['val'], episodes.episode_rng(1, 'val', 0),
                            tasks=2, way=5, shot=1, query=2)
  b = episodes.sample_tasks(alphabet, splits['test'], episodes.episode_rng(1, 'test', 0),
                            tasks=2, way=5, shot=1, query=2)
  assert not _hashes(a['support_x'].reshape(-1, 12, 12, 1)) & _hashes(
      b['support_x'].reshape(-1, 12, 12, 1))


def test_settings_per_way_override_the_five_way_block():
  c = fewshot_config.get_config()
  five, twenty = systems.method_config(c, 'maml', 5), systems.method_config(c, 'maml', 20)
  assert (five.steps, five.lr) == (1, 0.4)  # Finn et al. 5-way
  # Finn et al.'s 20-way steps, the rate of the 20-way validation search
  assert (twenty.steps, twenty.eval_steps, twenty.lr) == (5, 5, 0.4)
  assert c.method.maml.steps == 1  # a copy: the config is untouched
  assert systems.method_config(c, 'imaml', 20).steps == 25
  c.by_way.way20.maml.nope = 1
  with pytest.raises(ValueError, match='no field'):
    systems.method_config(c, 'maml', 20)


def test_shipped_settings_are_the_committed_search_choice():
  # docs/fewshot_search.json is the validation evidence; a config edited by hand (or a
  # search rerun without updating the config) would make the doc's claim false.
  path = os.path.join(os.path.dirname(__file__), '..', '..', 'docs', 'fewshot_search.json')
  with open(path) as f:
    chosen = json.load(f)['chosen']
  c = fewshot_config.get_config()
  for name, per_way in chosen.items():
    assert set(per_way) <= {'way5', 'way20'}, per_way
    for key, choice in per_way.items():
      cfg = systems.method_config(c, name, int(key[3:]))
      for field, value in choice['overrides'].items():
        assert cfg[field] == value, (name, key, field, cfg[field], value)
  # Every method but iMAML (its authors' inner loop) is validated at 20-way too, not run
  # with a 5-way choice or a published rate nobody checked on this domain.
  for name in set(fewshot_config.SYSTEMS + ('finetune',)) - {'imaml'}:
    assert 'way20' in chosen[name], name


def test_committed_table_was_run_with_the_shipped_settings():
  # docs/fewshot.json is the table's evidence: a config changed without rerunning the rows
  # (or rows merged from runs of older settings) would make the doc describe other runs.
  path = os.path.join(os.path.dirname(__file__), '..', '..', 'docs', 'fewshot.json')
  with open(path) as f:
    records = json.load(f)['records']
  c = fewshot_config.get_config()
  rows = {}
  for r in records:
    rows.setdefault((r['method'], r['way'], r['shot']), set()).add(r['seed'])
    if r['method'] != 'nearest_centroid':
      assert r['settings'] == systems.method_config(c, r['method'], r['way']).to_dict(), r
  assert {m for m, _, _ in rows} == set(c.methods)
  assert {(w, s) for _, w, s in rows} == set(zip(c.ways, c.shots))
  assert all(len(seeds) >= 3 for seeds in rows.values()), rows


def test_search_chooses_the_best_validation_point_per_method_and_way():
  points = [{'method': 'maml', 'way': 5, 'overrides': {'lr': 0.1}, 'accuracy': 80.0, 'ci95': 1},
            {'method': 'maml', 'way': 5, 'overrides': {'lr': 0.4}, 'accuracy': 85.0, 'ci95': 1},
            {'method': 'maml', 'way': 5, 'overrides': {'lr': 0.9}, 'accuracy': 85.0, 'ci95': 1},
            {'method': 'anil', 'way': 5, 'overrides': {'lr': 0.1}, 'accuracy': 70.0, 'ci95': 1}]
  chosen = experiment.choose(points)
  assert chosen['maml']['way5']['overrides'] == {'lr': 0.4}  # best; ties keep the first
  assert chosen['anil']['way5']['accuracy'] == 70.0
  table = report.search_markdown({'points': points, 'chosen': chosen})
  assert table.count('| yes |') == 2


def test_nearest_centroid_classifies_by_the_nearest_support_mean():
  support = np.zeros((1, 2, 2, 2, 1), np.float32)
  support[0, 1] = 1.0  # class 1 is bright
  query = np.stack([np.full((2, 2, 1), v, np.float32) for v in (0.1, 0.9, 0.6, 0.4)])[None]
  batch = {'support_x': support, 'support_y': np.array([[0, 1]]), 'query_x': query,
           'query_y': np.array([[0, 1, 1, 1]])}
  np.testing.assert_allclose(baselines.nearest_centroid(batch, 2), [0.75])  # 0.4 -> class 0


def _record(method, seed, accs, eval_seed=1234):
  return {'method': method, 'way': 5, 'shot': 1, 'seed': seed, 'accuracy': 100 * np.mean(accs),
          'ci95': loop.ci95(np.array(accs)), 'per_episode': list(accs), 's_per_iter': 0.1,
          'peak_mem_mb': 100.0, 'eval_seed': eval_seed, 'iterations': 10, 'eval_episodes': 4}


def test_statistics_over_seeds_and_paired_differences():
  recs = [_record('maml', 0, [1, 1, 0.5, 1]), _record('maml', 1, [1, 0.5, 0.5, 1]),
          _record('fomaml', 0, [1, 0.5, 0.5, 1]), _record('fomaml', 1, [1, 0.5, 0.5, 0.5])]
  rows = {r['method']: r for r in stats.aggregate(recs)}
  assert rows['maml']['seeds'] == 2 and rows['maml']['per_seed'] == {0: 87.5, 1: 75.0}
  assert rows['maml']['accuracy'] == pytest.approx(81.25)
  # t(0.975, 1) = 12.706; std of (87.5, 75) = 8.839; / sqrt(2)
  assert rows['maml']['seed_ci95'] == pytest.approx(12.706 * 8.8388 / np.sqrt(2), rel=1e-3)
  p = stats.paired(recs, 'maml', 'fomaml', 5, 1)
  assert p['per_seed'][0]['diff'] == pytest.approx(12.5) and p['per_seed'][1]['diff'] == 12.5
  assert p['diff'] == pytest.approx(12.5) and p['wins'] == 2
  one = stats.aggregate(recs[:1])[0]
  assert one['seed_ci95'] is None and one['seed_std'] is None  # one seed: no interval
  assert 'n/a' in report.format_table([one])
  with pytest.raises(ValueError, match='different test episodes'):
    stats.paired([recs[0], _record('fomaml', 0, [1, 1, 1, 1], eval_seed=9)], 'maml',
                 'fomaml', 5, 1)
  lines = report.baseline_check(stats.aggregate(
      recs + [_record('nearest_centroid', 0, [1, 0.5, 0.5, 1])]))  # 75.0
  assert lines[0].endswith('NOT beaten by fomaml')  # 68.75; maml (81.25) beats it


def test_merging_runs_keeps_the_later_settings_and_one_record_per_seed():
  old = dict(_record('anil', 0, [0.2, 0.2]), settings={'lr': 0.1})
  old1 = dict(_record('anil', 1, [0.2, 0.2]), settings={'lr': 0.1})
  new = dict(_record('anil', 0, [0.5, 0.5]), settings={'lr': 0.4})
  maml = dict(_record('maml', 0, [0.9, 0.9]), settings={'lr': 0.4})
  maml_again = dict(_record('maml', 0, [0.8, 0.8]), settings={'lr': 0.4})
  kept, dropped = experiment.merge_records([[old, old1, maml], [new, maml_again]])
  assert [id(r) for r in kept] == [id(maml_again), id(new)]  # table order, not run order
  assert {id(r) for r in dropped} == {id(old), id(old1), id(maml)}
