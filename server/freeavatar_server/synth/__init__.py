"""The synthetic world: procedural actors, built-in avatars, FEC-style triplets and test videos.

Nothing here downloads data; everything is rendered from seeds so that tests, benchmarks and
training runs are reproducible on a CPU-only machine.
"""
