"""Tools over the library: the meta-iteration benchmark and gradient diagnostics."""

from mmtl_jax import extras

extras.require('ser', 'mmtl_jax.tools')  # before any import that needs the extra

