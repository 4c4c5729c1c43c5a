"""Process settings a job applies before it computes: torch threads, the malloc allocator, numeric
precision and the Ray resources a job asks of its cluster.

May import: torch, ray, pruningnet.errors. Knows nothing of runs, search or the CLI.
"""
