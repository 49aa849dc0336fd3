"""Few-shot glyphs: the renderer, the rotated classes and splits, episodes, the six methods on
tiny sizes, and one end-to-end run of experiments/fewshot.py that must beat chance."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from mmtl_jax import meta
from mmtl_jax.configs import fewshot as fewshot_config
from mmtl_jax.fewshot import episodes, experiment, glyphs, loop, report, systems
from mmtl_jax.models.conv4 import Conv4

ROOT = pathlib.Path(__file__).resolve().parents[2]
NETS = ('body', 'head')


def test_renderer_is_deterministic_per_character_and_differs_between_characters():
  alphabet = glyphs.render_alphabet(6, samples=5, seed=3)
  assert alphabet.shape == (6, 5, 28, 28) and alphabet.dtype == np.uint8
  # Character c depends on (seed, c) only: the same whatever the alphabet's size.
  np.testing.assert_array_equal(alphabet[4], glyphs.render_character(3, 4, samples=5))
  np.testing.assert_array_equal(alphabet, glyphs.render_alphabet(6, samples=5, seed=3))
  assert not np.array_equal(alphabet[0], glyphs.render_alphabet(1, samples=5, seed=4)[0])
  ink = alphabet.reshape(6, 5, -1).astype(np.float32) / 255
  assert (ink.max(-1) > 0.5).all() and (ink.mean(-1) < 0.5).all()  # strokes, not blobs
  # Drawings of one character resemble each other more than those of another character.
  within = np.abs(ink[:, 0] - ink[:, 1]).mean()
  between = np.abs(ink[:, 0] - np.roll(ink[:, 0], 1, axis=0)).mean()
  assert within < between
  with pytest.raises(ValueError):
    glyphs.render_alphabet(0)


def test_class_count_and_character_level_splits():
  splits = episodes.split_classes(1000, (0.7, 0.1, 0.2))
  assert glyphs.num_classes(1000) == 4000
  assert [len(splits[s]) for s in episodes.SPLITS] == [2800, 400, 800]
  every = np.concatenate([splits[s] for s in episodes.SPLITS])
  np.testing.assert_array_equal(np.sort(every), np.arange(4000))  # disjoint, complete
  for name in episodes.SPLITS:  # all four rotations of a character stay in its split
    chars, _ = glyphs.split_class(splits[name])
    assert (np.bincount(chars)[np.unique(chars)] == glyphs.ROTATIONS).all()
  with pytest.raises(ValueError, match='summing to 1'):
    episodes.split_classes(10, (0.5, 0.5, 0.5))
  with pytest.raises(ValueError, match='no character'):
    episodes.split_classes(3, (1.0, 0.0, 0.0))


def test_rotated_classes_are_rotations_and_distinct():
  alphabet = glyphs.render_alphabet(20, samples=3)
  chars = np.repeat(np.arange(20), 4)
  classes = glyphs.class_of(chars, np.tile(np.arange(4), 20))
  images = glyphs.class_images(alphabet, classes, np.zeros((80, 1), np.int64))[:, 0]
  for i, cls in enumerate(classes):
    c, r = glyphs.split_class(cls)
    np.testing.assert_array_equal(images[i], np.rot90(alphabet[c, 0], k=r))
  per_char = images.reshape(20, 4, -1).astype(np.float32)
  for a in range(4):
    for b in range(a + 1, 4):
      assert (np.abs(per_char[:, a] - per_char[:, b]).mean(-1) > 5).all(), (a, b)


def _marked_alphabet(chars=12, samples=6, size=4):
  """Image (c, s) is blank but for pixel (0, 0) = c + 1 and (0, 1) = s + 1."""
  alphabet = np.zeros((chars, samples, size, size), np.uint8)
  alphabet[:, :, 0, 0] = np.arange(chars)[:, None] + 1
  alphabet[:, :, 0, 1] = np.arange(samples)[None, :] + 1
  return alphabet


def _decode(image):
  """(class, sample) of a marked image: undo the rotation that puts the marks back."""
  for k in range(4):
    back = np.rot90(image, -k)
    if back[0, 0] > 0 and back[0, 1] > 0:
      return glyphs.class_of(int(round(back[0, 0] * 255)) - 1, k), int(round(back[0, 1] * 255))
  raise AssertionError('unmarked image')


def test_episodes_have_the_promised_shapes_labels_and_classes():
  alphabet = _marked_alphabet()
  split = np.arange(8, 40)  # characters 2..9, all rotations
  batch = episodes.sample_tasks(alphabet, split, episodes.episode_rng(0, 'train', 5), tasks=3,
                                way=4, shot=2, query=3)
  assert batch['support_x'].shape == (3, 8, 4, 4, 1) and batch['query_x'].shape == (3, 12, 4, 4, 1)
  assert batch['support_y'].dtype == np.int32 and batch['support_x'].dtype == np.float32
  np.testing.assert_array_equal(batch['support_y'][1], np.repeat(np.arange(4), 2))
  np.testing.assert_array_equal(batch['query_y'][2], np.repeat(np.arange(4), 3))
  for t in range(3):
    seen = {}
    for part in ('support', 'query'):
      for image, label in zip(batch[f'{part}_x'][t, ..., 0], batch[f'{part}_y'][t]):
        cls, sample = _decode(image)
        assert cls in split
        seen.setdefault(int(label), []).append((cls, sample))
    assert len({pairs[0][0] for pairs in seen.values()}) == 4  # 4 distinct classes
    for pairs in seen.values():  # one class per label, 5 distinct drawings of it
      assert len({c for c, _ in pairs}) == 1 and len({s for _, s in pairs}) == 5
  again = episodes.sample_tasks(alphabet, split, episodes.episode_rng(0, 'train', 5), tasks=3,
                                way=4, shot=2, query=3)
  np.testing.assert_array_equal(batch['query_x'], again['query_x'])
  with pytest.raises(ValueError, match='exceeds'):
    episodes.sample_tasks(alphabet, split, episodes.episode_rng(0, 'train', 0), tasks=1,
                          way=2, shot=4, query=3)


def _tiny_config():
  c = fewshot_config.get_config()
  c.model.channels = 4
  c.train.iterations = 2
  c.train.meta_batch = 2
  c.train.query = 2
  for name in fewshot_config.SYSTEMS + ('finetune',):
    c.method[name].steps = min(int(c.method[name].steps), 2)
    c.method[name].eval_steps = 2
  c.method.imaml.cg_steps = 2
  c.eval.episodes = 4
  c.eval.chunk = 4
  c.eval.query = 2
  return c


@pytest.mark.slow  # measured: meta-trains each system
@pytest.mark.parametrize('name', fewshot_config.SYSTEMS + ('finetune',))
def test_each_method_takes_outer_steps(name):
  c = _tiny_config()
  alphabet = glyphs.render_alphabet(12, samples=4, size=16)
  splits = episodes.split_classes(12, (0.5, 0.25, 0.25))
  model = Conv4(way=3, channels=4)
  net, stats = systems.init_network(model, jax.random.PRNGKey(0), (16, 16, 1))
  losses = systems.make_losses(model, stats)
  method = systems.build(name, c.method[name], losses, c.train.iterations)
  params = systems.method_params(method, net, c.method[name])
  before = jax.tree.map(np.asarray, params)
  if not method.meta_trained:  # the finetune baseline: adapted at test time only
    assert method.spec is None
    trained = params
  else:
    trained, info = loop.train(method, params, alphabet, splits['train'], way=3, shot=1,
                               config=c)
    assert np.isfinite(info['final_outer_loss']) and info['s_per_iter'] > 0
    if name == 'imaml':  # the solves are measured every step
      assert info['implicit']['steps'] == c.train.iterations
      assert np.isfinite(info['implicit']['cg_residual_mean'])
      assert 0 <= info['implicit']['prox_grad_ratio_mean']
  assert set(trained) == set(before)
  if not method.meta_trained:
    trained = before
  for group in (trained if method.meta_trained else ()):  # Meta-SGD's rates too
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), trained[group],
                                         before[group]))
    assert max(moved) > 0, group
  episode = jax.tree.map(lambda x: x[0], episodes.sample_tasks(
      alphabet, splits['test'], episodes.episode_rng(0, 'test', 0), tasks=1, way=3, shot=1,
      query=2))
  adapted, _ = meta.adapt_stages(method.eval_stages(trained), trained, episode,
                                 jax.random.PRNGKey(0))
  changed = {g: max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                                                 adapted[g], trained[g]))) > 0 for g in NETS}
  assert changed == {'body': name != 'anil', 'head': True}  # ANIL adapts the head alone



def test_config_variants_and_settings_checks():
  quick = fewshot_config.get_config('quick')
  assert quick.data.num_characters >= 1000  # quick never shrinks the alphabet
  assert list(zip(quick.ways, quick.shots)) == [(5, 1)]
  full = fewshot_config.get_config()
  assert experiment.settings_of(full) == [(5, 1), (5, 5), (20, 1)]
  assert [experiment.meta_batch_of(full, w) for w in (5, 20)] == [4, 2]
  with pytest.raises(ValueError):
    fewshot_config.get_config('huge')
  full.shots = (1, 5)
  with pytest.raises(ValueError, match='paired'):
    experiment.settings_of(full)
  full.shots = (1, 5, 6)
  with pytest.raises(ValueError, match='exceeds'):
    experiment.settings_of(full)
  with pytest.raises(ValueError, match='known: maml, .*nearest_centroid'):  # baselines too
    experiment.check_methods(['maml', 'protonet'])
  assert experiment.check_methods(['nearest_centroid', 'finetune']) == ['nearest_centroid',
                                                                       'finetune']
  assert loop.ci95(np.array([0.0, 1.0])) == pytest.approx(100 * 1.96 * 0.5 / np.sqrt(2))


@pytest.mark.slow  # end-to-end, in a subprocess
def test_cli_tiny_run_beats_chance_and_writes_records(tmp_path):
  out, md = tmp_path / 'fs.json', tmp_path / 'fs.md'
  cmd = [sys.executable, str(ROOT / 'experiments' / 'fewshot.py'), '--quick',
         '--methods=fomaml', '--config.train.iterations=15', '--config.model.channels=8',
         '--config.eval.episodes=40', '--config.eval.chunk=40', f'--json={out}', f'--md={md}',
         '--config.train.report_every_s=0']
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  data = json.loads(out.read_text())
  assert data['quick'] and data['complete'] and data['config']['data']['num_characters'] == 1000
  (record,) = data['records']
  assert {'method', 'way', 'shot', 'seed', 'accuracy', 'ci95', 's_per_iter',
          'peak_mem_mb', 'per_episode', 'settings'} <= set(record)
  assert record['accuracy_unit'] == 'percent' and data['accuracy_unit'] == 'percent'
  assert (record['method'], record['way'], record['shot']) == ('fomaml', 5, 1)
  assert record['s_per_iter'] > 0 and record['peak_mem_mb'] > 0
  # 5-way: chance is 20%; the CI half-width keeps a lucky draw from passing.
  assert record['accuracy'] - record['ci95'] > 30.0, record
  assert '| fomaml | 5-way 1-shot |' in md.read_text()
  # stdout is a pipe: progress comes as plain lines with an ETA (issue 21), no bars.
  assert '[record fomaml 5-way 1-shot seed 0] step 15/15' in proc.stdout and 'ETA' in proc.stdout


def test_report_compares_exact_and_first_order_paired_over_seeds():
  rec = lambda m, w, s, seed, accs: {
      'method': m, 'way': w, 'shot': s, 'seed': seed, 'accuracy': 100 * np.mean(accs),
      'ci95': 1.0, 'per_episode': accs, 'eval_seed': 1, 's_per_iter': 0.1,
      'peak_mem_mb': 10.0, 'iterations': 5, 'eval_episodes': len(accs)}
  records = [rec('maml', 20, 1, 0, [0.8, 0.9]), rec('fomaml', 20, 1, 0, [0.7, 0.8]),
             rec('anil', 5, 1, 0, [0.5, 0.5])]
  text = '\n'.join(report.comparison(records))
  assert '+10.0 n/a points here' in text and '+6.40 (95.8 vs 89.4)' in text
  assert 'Nichol et al. 2018, Table 1' in text  # the first-order figure's own table
  md = report.markdown({'records': records})
  assert md.count('| maml | 20-way 1-shot | 85.0 | n/a | 1 |') == 1


@pytest.mark.slow  # measured: compiles every diagnostic
def test_diagnostics_hook_writes_the_curve(tmp_path):
  from mmtl_jax.fewshot import diagnostics  # pylint: disable=g-import-not-at-top
  c = _tiny_config()
  c.diagnostics_every = 2
  c.diagnostics_modes = ('first_order',)  # the others cost compile time, not coverage here
  alphabet = glyphs.render_alphabet(12, samples=4, size=16)
  classes = episodes.split_classes(12, (0.5, 0.25, 0.25))['train']
  model = Conv4(way=3, channels=4)
  net, stats = systems.init_network(model, jax.random.PRNGKey(0), (16, 16, 1))
  losses = systems.make_losses(model, stats)
  method = systems.build('fomaml', c.method.fomaml, losses, 3)
  hook, finish = diagnostics.hook_factory(c, str(tmp_path))('fomaml', 3, 1, method, losses)
  batch = episodes.sample_tasks(alphabet, classes, episodes.episode_rng(0, 'train', 0), tasks=2,
                                way=3, shot=1, query=2)
  for it in range(3):  # as loop.train calls it before each outer step
    hook(it, systems.method_params(method, net, c.method.fomaml), batch, jax.random.PRNGKey(it))
  summary = finish()
  data = json.loads(pathlib.Path(summary['json']).read_text())
  assert [p['step'] for p in data['points']] == [0, 2]
  assert set(data['points'][0]['global']) == {'first_order'}
  for stats_ in data['points'][0]['global'].values():
    assert -1.0 - 1e-6 <= stats_['cosine'] <= 1.0 + 1e-6 and stats_['norm_ratio'] > 0
  names = [layer['name'] for layer in data['points'][0]['layers']]
  assert 'head/kernel' in names and 'body/conv0/kernel' in names  # per leaf
  assert pathlib.Path(summary['png']).stat().st_size > 0
  with pytest.raises(ValueError):
    c.diagnostics_every = 0
    diagnostics.hook_factory(c, str(tmp_path))
