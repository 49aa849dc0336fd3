"""Few-shot classification of procedurally generated glyphs (Omniglot-like): six meta-learners
and two trivial baselines, each with settings chosen on validation characters.

  python experiments/fewshot.py --workdir=runs/fewshot            # the full table, 3 seeds
  python experiments/fewshot.py --quick                           # < 10 min on 2 cores
  python experiments/fewshot.py --search --workdir=runs/search    # the validation search
  python experiments/fewshot.py --config=src/mmtl_jax/configs/fewshot.py:quick   # = --quick

`get_config()` is the full table at laptop scale: Finn et al. (2017)'s Omniglot network
(stride-2 convolutions, spatial mean) at half their width (32 channels, not 64: a 20-way
exact-MAML step costs 0.36 s instead of 1.38 s on 2 CPU cores), 300 meta-iterations with a
meta-batch of 4 (2 at 20-way). `get_config('paper')` is Finn et al.'s scale, an accelerator's
job. The method settings below were chosen by the validation search (`search` block; the
figures are in docs/fewshot.md); they start from the papers' own settings.
"""

import ml_collections

SYSTEMS = ('maml', 'fomaml', 'reptile', 'imaml', 'meta_sgd', 'anil')
BASELINES = ('nearest_centroid', 'finetune')


def _method(**kwargs) -> ml_collections.ConfigDict:
  base = dict(steps=1, eval_steps=3, lr=0.4, outer_lr=1e-3, strategy='auto')
  base.update(kwargs)
  return ml_collections.ConfigDict(base)


def _imaml(**kwargs) -> ml_collections.ConfigDict:
  # Rajeswaran et al. (2019) and their code (aravindr93/imaml_dev): 16 inner steps at 5-way
  # (25 at 20-way), lambda 2, 5 CG steps on the damped system 2 I + H / (lambda + 10), the
  # pull-back step, plain SGD steps at test time. The validation search chose lambda 0.5
  # (84.4% against 84.3% for 2 and 83.2% undamped; docs/fewshot.md).
  base = dict(steps=16, eval_steps=16, lr=0.1, lam=0.5, cg_steps=5, cg_damping=1.0,
              cg_lam_damping=10.0, pull_back=True, test_adapt='plain')
  base.update(kwargs)
  return _method(**base)


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """arg: '' (full), 'quick' or 'paper' (Finn et al.'s scale)."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # the first meta-training seed (init and training episodes)
  c.seeds = 3  # meta-training seeds seed, seed + 1, ...; test episodes do not depend on them
  c.data = ml_collections.ConfigDict()
  c.data.num_characters = 1000  # x 4 rotations = 4,000 classes
  c.data.samples = 20  # drawings per character, as Omniglot's 20 drawers
  c.data.size = 28
  c.data.seed = 0
  c.data.jitter = 0.03  # control-point noise between drawings (unit square)
  c.data.pen = 1.2  # pen blur sigma, pixels of the 2x render grid
  c.data.split = (0.7, 0.1, 0.2)  # train / validation / test characters

  c.model = ml_collections.ConfigDict()
  c.model.channels = 32  # Finn et al.: 64 (see the module docstring)
  c.model.downsample = 'stride'  # Finn et al.'s Omniglot net; 'max': max pooling, flatten

  c.methods = SYSTEMS + BASELINES
  c.ways = (5, 5, 20)  # paired with shots: 5-way 1-shot, 5-way 5-shot, 20-way 1-shot
  c.shots = (1, 5, 1)

  c.train = ml_collections.ConfigDict()
  c.train.iterations = 300
  c.train.meta_batch = 4  # tasks per outer step (Finn et al.: 32, 16 for 20-way)
  c.train.meta_batch_by_way = ((20, 2),)  # (way, tasks) exceptions: halved, as Finn et al.
  c.train.query = 5  # query images per class in training episodes
  c.train.report_every_s = 30.0  # progress lines where stdout is no terminal (0: each step)
  c.train.implicit_warn_every = 50  # outer steps between repeated iMAML solve warnings

  # One block per method (systems.py says what each field means for it). lr: inner rate;
  # steps / eval_steps: inner steps in training / at test; outer_lr: Adam (Reptile: the
  # outer SGD step size, annealed linearly to 0). These are the 5-way settings; `by_way`
  # holds the fields that differ at other ways.
  c.method = ml_collections.ConfigDict()
  c.method.maml = _method()  # Finn et al. 5-way: 1 step of 0.4, 3 at test
  c.method.fomaml = _method()
  c.method.reptile = _method(steps=5, eval_steps=10, lr=3.2, outer_lr=1.0)
  c.method.imaml = _imaml()
  c.method.meta_sgd = _method(rate_outer_lr=1e-3)
  c.method.anil = _method(steps=5, eval_steps=10, lr=1.6)
  c.method.finetune = _method(steps=0, eval_steps=10, lr=3.2)  # no meta-training
  c.method.nearest_centroid = ml_collections.ConfigDict()  # pixels; nothing to set

  c.by_way = ml_collections.ConfigDict()
  # 20-way: Finn et al.'s 5 inner steps (train and test) for maml, fomaml, meta_sgd, and
  # iMAML's 25; every rate here was chosen by the 20-way validation search (Finn et al.
  # used 0.1; iMAML's rate is its authors', not searched).
  c.by_way.way20 = ml_collections.ConfigDict({
      'maml': {'steps': 5, 'eval_steps': 5, 'lr': 0.4},
      'fomaml': {'steps': 5, 'eval_steps': 5, 'lr': 0.8},
      'meta_sgd': {'steps': 5, 'eval_steps': 5, 'lr': 0.4},
      'imaml': {'steps': 25, 'eval_steps': 25},
      'reptile': {'lr': 1.6},
      'anil': {'lr': 3.2},
      'finetune': {'lr': 3.2},
  })

  c.eval = ml_collections.ConfigDict()
  c.eval.episodes = 200
  c.eval.query = 15  # query images per class (shot + query <= 20)
  c.eval.seed = 1234  # test episodes: the same for every method and seed
  c.eval.chunk = 50  # episodes per jitted evaluation call

  # The validation search (--search): each grid point of a method trains with
  # train.iterations on the train characters and is scored on search.episodes episodes of
  # the VALIDATION characters (never the test ones); the best point per method and way is
  # what `method` / `by_way` hold. Grids are lists of {field: value} overrides.
  c.search = ml_collections.ConfigDict()
  # 5-way by default; the 20-way rates in `by_way` come from
  # --search --methods=maml,fomaml,reptile,meta_sgd,anil,finetune --config.search.ways=20
  c.search.ways = (5,)
  c.search.shot = 1
  c.search.episodes = 100
  c.search.seed = 4321  # validation episodes
  # The inner rates: Finn et al.'s 0.4 and 0.1, then doublings from 0.8 to 6.4 (the first
  # search, 0.1 and 0.4 only, ended at its largest rate for every method; a second, up to
  # 1.6, still did for ANIL and the fine-tuning baseline). The same rates for every method.
  rates = lambda *extra: [{'lr': lr} for lr in extra + (0.1, 0.4, 0.8, 1.6, 3.2, 6.4)]
  c.search.grid = ml_collections.ConfigDict({
      'maml': rates(),
      'fomaml': rates(0.05),
      'reptile': rates(),
      'imaml': [{'lam': 2.0}, {'lam': 0.5},
                {'lam': 2.0, 'cg_damping': 0.0, 'cg_lam_damping': 0.0}],
      'meta_sgd': rates(),
      'anil': rates(),
      'finetune': rates(),
  })

  c.diagnostics_every = 0  # > 0: gradient-diagnostic curve every N outer steps
  c.diagnostics_modes = ('first_order', 'reptile', 'implicit')  # each compared with exact
  if arg == 'quick':
    quick(c)
  elif arg == 'paper':
    paper(c)
  elif arg:
    raise ValueError(f"fewshot config arg must be '', 'quick' or 'paper', got {arg!r}")
  return c


def quick(c: ml_collections.ConfigDict) -> None:
  """The < 10 minute run on 2 CPU cores: 5-way 1-shot only (not 3 settings), one seed,
  100 meta-iterations (not 300), 100 test episodes (not 200). Model, meta-batch, the
  validated method settings and the alphabet are those of the full run."""
  c.ways, c.shots = (5,), (1,)
  c.seeds = 1
  c.train.iterations = 100
  c.eval.episodes = 100


def paper(c: ml_collections.ConfigDict) -> None:
  """Finn et al. (2017)'s Omniglot scale (an accelerator's job, not a laptop's)."""
  c.model.channels = 64
  c.train.iterations = 60000  # Finn et al. use a meta-batch of 16 for 20-way
  c.train.meta_batch = 32
  c.train.meta_batch_by_way = ((20, 16),)
  c.eval.episodes = 600
  for name in SYSTEMS:
    c.method[name].strategy = 'vmap'


__all__ = ['BASELINES', 'get_config', 'paper', 'quick', 'SYSTEMS']
