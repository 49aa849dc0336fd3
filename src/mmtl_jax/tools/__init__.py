"""Tools over the library: the meta-iteration benchmark and gradient diagnostics."""
