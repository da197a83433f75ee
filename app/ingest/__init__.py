"""The usage write path: items and their checks, recording and voiding, keys, totals, their SQL,
and the bulk import. Importing the package loads nothing (the import's reader forks first)."""
