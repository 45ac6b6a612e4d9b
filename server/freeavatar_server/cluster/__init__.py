"""Cluster mode: several servers serve every session, on NATS (rig frames, notices between
servers) and PostgreSQL (registry, sessions, jobs, model versions). docs/cluster.md."""
