"""What the tests and the benchmarks share: test media, a live server, media tools, tiny MuseTalk
weights, schema-driven fuzzing and hostile media. A development package: not part of the server's
wheel (pyproject finds packages under service/ and operator/ only).

Importable from the repository root: pytest puts the root on its path (pyproject's `pythonpath`),
and benchmarks run from the root as `python -m bench.NAME`.
"""
