"""Training jobs: queued by the server, each run in a process of its own so that a training run
neither blocks streaming nor can crash the server."""
