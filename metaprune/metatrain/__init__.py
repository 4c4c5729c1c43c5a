"""Meta-training the PruningNet: its config section, the training loop with checkpoints and resume,
the divergence guard and the Ray Train (several workers) variant.

May import: pruningnet, metaprune.config, metaprune.data, metaprune.process and metaprune.store (the
Ray Train variant also the Ray connection of metaprune.training.runner). Knows nothing of search, the
CLI or the service.
"""
