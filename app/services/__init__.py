"""Use-cases: each opens its unit of work, checks access, calls the billing core, commits."""
