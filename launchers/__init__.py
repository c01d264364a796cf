"""Process launchers for tests and benchmarks (redis-server, PostgreSQL, `bentoml serve`).

Not part of the service: nothing under core/, training/, serving/ or monitoring/ imports
them (an import-linter contract), and the Bento does not ship them."""
