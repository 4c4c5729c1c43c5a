"""The run directory and its files: opening a run, the one-writer lock, atomic and non-blocking file
reads and writes, the schema of every file a run holds, and subnet spec files.

Every file in a run directory is treated as written by an attacker: read through these schemas,
never unpickled. May import: pruningnet, metaprune.config, metaprune.data (split fingerprints) and
metaprune.metatrain.config (a run's config is a meta-training config). Knows nothing of search, scratch
training, the CLI or the service.
"""
