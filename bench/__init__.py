"""Benchmarks of nightowl against reference engines (run with ``python -m bench.<name>``)."""
