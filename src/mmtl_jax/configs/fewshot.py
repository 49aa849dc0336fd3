"""Few-shot classification of procedurally generated glyphs (Omniglot-like): six meta-learners.

  python experiments/fewshot.py --json=/tmp/fs.json --md=/tmp/fs.md     # the full run
  python experiments/fewshot.py --quick                                  # < 5 min, 2 cores
  python experiments/fewshot.py --config=src/mmtl_jax/configs/fewshot.py:quick   # the same
  python experiments/fewshot.py --config.train.iterations=200 --methods=maml,anil

`get_config()` is the full run at laptop scale (Finn et al. 2017 ran 60,000 iterations with a
meta-batch of 32 and 64 channels; that is `get_config('paper')`, for accelerators). The
`quick` override shrinks what training costs, never the alphabet: 1,000 characters (4,000
classes with rotations) are rendered in every variant.
"""

import ml_collections

SYSTEMS = ('maml', 'fomaml', 'reptile', 'imaml', 'meta_sgd', 'anil')


def _method(**kwargs) -> ml_collections.ConfigDict:
  base = dict(steps=1, eval_steps=3, lr=0.4, outer_lr=1e-3, strategy='auto')
  base.update(kwargs)
  return ml_collections.ConfigDict(base)


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """arg: '' (full), 'quick' or 'paper' (Finn et al.'s scale)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict()
  c.data.num_characters = 1000  # x 4 rotations = 4,000 classes
  c.data.samples = 20  # drawings per character, as Omniglot's 20 drawers
  c.data.size = 28
  c.data.seed = 0
  c.data.jitter = 0.03  # control-point noise between drawings (unit square)
  c.data.pen = 1.2  # pen blur sigma, pixels of the 2x render grid
  c.data.split = (0.7, 0.1, 0.2)  # train / val / test characters (val is unused for now)

  c.model = ml_collections.ConfigDict()
  c.model.channels = 16  # Finn et al.: 64

  c.methods = SYSTEMS
  c.ways = (5, 5, 20)  # paired with shots: 5-way 1-shot, 5-way 5-shot, 20-way 1-shot
  c.shots = (1, 5, 1)

  c.train = ml_collections.ConfigDict()
  c.train.iterations = 500
  c.train.meta_batch = 4  # tasks per outer step (Finn et al.: 32, 16 for 20-way)
  c.train.meta_batch_by_way = ((20, 2),)  # (way, tasks) exceptions: halved, as Finn et al.
  c.train.query = 5  # query images per class in training episodes
  c.train.log_every = 20

  # One block per method (systems.py says what each field means for it). lr: inner rate;
  # steps / eval_steps: inner steps in training / at test; outer_lr: Adam (Reptile: the
  # outer SGD step size, annealed linearly to 0).
  c.method = ml_collections.ConfigDict()
  c.method.maml = _method()
  c.method.fomaml = _method()
  c.method.reptile = _method(steps=5, eval_steps=10, lr=0.1, outer_lr=1.0)
  c.method.imaml = _method(steps=5, eval_steps=5, lr=0.1, lam=2.0, cg_steps=5)
  c.method.meta_sgd = _method(rate_outer_lr=1e-3)
  c.method.anil = _method(steps=5, eval_steps=10)

  c.eval = ml_collections.ConfigDict()
  c.eval.episodes = 200
  c.eval.query = 15  # query images per class (shot + query <= 20)
  c.eval.seed = 1234  # test episodes: same for every method
  c.eval.chunk = 50  # episodes per jitted evaluation call

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
  """The < 5 minute smoke run on 2 CPU cores: 5-way 1-shot only (not 3 settings), 100
  meta-iterations (not 500), 100 test episodes (not 200). Model, meta-batch, method settings
  and the alphabet are those of the full run."""
  c.ways, c.shots = (5,), (1,)
  c.train.iterations = 100
  c.eval.episodes = 100


def paper(c: ml_collections.ConfigDict) -> None:
  """Finn et al. (2017)'s Omniglot scale (an accelerator's job, not a laptop's)."""
  c.model.channels = 64
  c.train.iterations = 60000  # Finn et al. use a meta-batch of 16 for 20-way
  c.train.meta_batch = 32
  c.train.meta_batch_by_way = ((20, 16),)
  c.eval.episodes = 600
  c.method.reptile.steps = 5
  for name in SYSTEMS:
    c.method[name].strategy = 'vmap'
