"""The accepted range of every number a user or a run file gives (no YAML, no torch: the GPU check
imports it through the run-file schemas)."""
from __future__ import annotations

#: Every numeric config key is bounded on both sides, here, for every config (meta-training, search,
#: scratch training): a key named below, in any section, lies in its range; any other integer in
#: INT_RANGE and any other number is finite and within FLOAT_RANGE. Each section's ``validate()``
#: adds the bounds that depend on meaning (``lr > 0``, ``momentum < 1``, ...).
SEED_RANGE = (0, 2**32 - 1)  # what numpy, torch and Ray all take
THREADS_RANGE = (1, 1024)  # torch.set_num_threads(1000000) segfaults
COUNT_LIMIT = 10**9  # images, steps: far above any dataset or schedule
NAMED_RANGES: dict[str, tuple[int, int]] = {
    "seed": SEED_RANGE, "threads": THREADS_RANGE, "workers": (0, 256),
    "epochs": (1, 100_000), "crash_at_epoch": (0, 100_000), "max_steps": (1, COUNT_LIMIT),
    "warmup_steps": (0, COUNT_LIMIT), "checkpoint_every_steps": (1, COUNT_LIMIT),
    "log_every_steps": (1, COUNT_LIMIT), "batch_size": (1, 1 << 20), "eval_batch_size": (1, 1 << 20),
    "bn_batches": (1, 1_000_000), "max_images": (1, COUNT_LIMIT), "max_train_images": (1, COUNT_LIMIT),
    "max_test_images": (1, COUNT_LIMIT), "search_per_class": (1, COUNT_LIMIT),
    "test_per_class": (1, COUNT_LIMIT), "image_size": (1, 8192), "hidden": (1, 8192),
    "population": (1, 1_000_000), "parents": (1, 1_000_000), "mutations": (0, 1_000_000),
    "crossovers": (0, 1_000_000), "generations": (1, 1_000_000), "checkpoints_to_keep": (1, 1000),
    "max_failures": (0, 1000),
}
INT_RANGE = (-(2**31), 2**31 - 1)
FLOAT_RANGE = (-1e30, 1e30)  # finite with room: float32 overflows at 3.4e38
