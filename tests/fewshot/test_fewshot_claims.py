"""The few-shot study's claims (issue 30): the markdown regenerated from the committed
docs/fewshot.json cites the papers' tables as they are, states the baseline claim only where
the seed-interval rule holds, labels every p-value with its unit, and is what
docs/fewshot.md holds."""

import json
import os
import re

import pytest

from mmtl_jax.fewshot import report
from mmtl_jax.run import stats

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')


def _read(*parts):
  with open(os.path.join(ROOT, *parts), encoding='utf-8') as f:
    return f.read()


@pytest.fixture(scope='module')
def committed():
  return json.loads(_read('docs', 'fewshot.json'))


@pytest.fixture(scope='module')
def md(committed):
  return report.markdown(committed)


def _section(md, title):
  return md.split(f'## {title}\n', 1)[1].split('\n## ', 1)[0]


def test_finn_et_al_miniimagenet_is_their_table_1_and_nichol_table_is_marked(md):
  assert 'Table 2' not in md and 'Table 2' not in report.__doc__
  mini = [line for line in md.splitlines() if 'miniimagenet' in line]
  assert mini and all('Finn et al. 2017, Table 1)' in line for line in mini)
  assert 'Nichol et al. 2018, Table 1)' not in md  # a table number only with its caveat
  assert 'table number not verified' in md


def test_the_cross_paper_gap_is_labelled_our_arithmetic_and_imaml_as_quoted(md):
  found = _section(md, "The literature's findings, checked")
  assert 'Nichol et al. 2018 (the gap grows' not in found
  assert "our arithmetic on two papers' figures" in found and '+0.4 -> +6.4' in found
  assert 'at least as good' not in md
  for published in ('+0.46 (99.16 vs 98.7: ahead)', '-0.23 (99.67 vs 99.9: behind)',
                    '-1.34 (94.46 vs 95.8: behind)'):
    assert published in found


def test_the_baseline_claim_holds_by_the_seed_interval_rule(committed, md):
  recs = committed['records']
  settings = sorted({(r['way'], r['shot']) for r in recs})
  metas = {r['method'] for r in recs} - set(report.BASELINE_NAMES)
  summary = _section(md, 'Baselines').strip().splitlines()[0]
  misses = []
  for way, shot in settings:
    for m in metas:
      for b in report.BASELINE_NAMES:
        p = stats.paired(recs, m, b, way, shot)
        name = f'{m} vs {b} {p["diff"]:+.1f} ±{p["seed_ci95"]:.1f} at {way}-way {shot}-shot'
        if p['diff'] <= p['seed_ci95']:  # zero inside the interval (or behind): no win
          misses.append(name)
          assert name in summary
        else:
          assert name not in summary
  assert misses == ['reptile vs finetune +2.7 ±4.3 at 5-way 1-shot']  # the committed table
  assert 'every meta-learner beats it' not in md
  doc = ' '.join(_read('docs', 'fewshot.md').split())
  assert 'Every meta-learner beats both baselines in every setting.' not in doc
  assert 'except Reptile against the fine-tuned network at 5-way 1-shot' in doc


def test_the_baseline_summary_without_exceptions():
  rec = lambda m, seed, accs: {'method': m, 'way': 5, 'shot': 1, 'seed': seed,
                               'accuracy': 100.0 * sum(accs) / len(accs), 'per_episode': accs,
                               'eval_seed': 1}
  recs = [rec('maml', s, [1, 1, 1, 0]) for s in range(3)] + [
      rec('finetune', s, [0, 0, s == 1, 0]) for s in range(3)]  # +75, +50, +75: a win
  assert report.baseline_summary(recs).startswith('Every meta-learner beats every baseline in '
                                                  'every setting')


def test_every_p_value_names_its_unit(committed, md):
  lines = _section(md, 'Paired comparisons').strip().splitlines()
  assert len(lines) == 6
  for line in lines:
    assert 'p over seeds (t-test, n = 3)' in line
    assert 'p over episodes (Wilcoxon, n = 200, seed variance ignored)' in line
    assert set(re.findall(r'\bp (\S+)', line)) == {'over'}  # no p without its unit
  twenty = next(line for line in lines if line.startswith('- 20-way 1-shot: maml - fomaml'))
  assert 'p over seeds (t-test, n = 3) 0.2;' in twenty and 'ignored) 7.6e-26)' in twenty


def test_the_committed_page_holds_the_regenerated_block(md):
  body = md.split('\n', 2)[2]  # without the title line
  assert body in _read('docs', 'fewshot.md')


def test_the_methods_help_counts_eight():
  text = _read('experiments', 'fewshot.py')
  assert 'all six' not in text and 'all eight' in text
