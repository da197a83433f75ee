"""Pure billing core: money, pricing and the revenue-sharing waterfall (no I/O)."""
