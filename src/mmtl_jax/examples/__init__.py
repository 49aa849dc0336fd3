"""Examples of the domain-free `meta` package on other problems (sinusoid regression)."""
