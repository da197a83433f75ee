"""The composition root: the ASGI app, the CLI, the doors that are not GraphQL, the demo and the
dashboard. The only part of app/ that imports graph/ (kept free of imports itself: the CLI's
import path must not load the database layer)."""
