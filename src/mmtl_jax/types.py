from mmtl_jax.records import *  # noqa  (temporary: removed once meta/ stops importing it)
from mmtl_jax.records import Params, PyTree  # noqa: F401
