"""The FreeAvatar server: models, training, the live pipeline, transports, jobs and the store."""
