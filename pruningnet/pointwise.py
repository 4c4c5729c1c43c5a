"""Up to which input size a generated 1x1 conv runs as a matrix product on this CPU: a measured rule.

Meta-training brings new channel counts every step. oneDNN builds (JIT-compiles) a primitive per conv
shape, so a generated conv pays that setup on almost every step, while a matrix product has none.
Once its primitive exists, oneDNN's conv can still be faster than the product on large inputs, and
how much depends on the CPU. Whole meta-training steps of MobileNetV2-1.4 at 224 (2 threads, random
vectors; ``benchmarks/bench_cpu_rule.py --part sweep``, BENCHMARKS.md issues 17 and 31) placed the
crossover differently on the two CPUs this project has measured:

- AMD EPYC (2 cores): products up to 2^20 input elements were best; every 1x1 conv a product was
  within noise at batch 8 but 25% slower at batch 64 (1.92 vs 1.44 s).
- Intel Xeon with AVX-512 and AMX (2 cores): every 1x1 conv a product was fastest at both batches
  (batch 8: 0.69 s vs 0.82 s at 2^20; batch 64: 2.99 vs 3.09 s).

A per-layer calibration at run time was tried first and dropped: single 1x1 layers on this Intel
gave product/conv ratios that jumped between 0.35 and 1.9 from one size to the next (3 timings each,
channel counts drawn per timing) and disagreed with whole steps, so it would have picked a limit at
random. The rule is therefore by CPU vendor, from those measurements; a CPU of another vendor gets the
AMD limit, the more conservative one (large inputs keep the conv), until it is measured. The
choice only changes speed: product and conv compute the same values up to rounding.
"""
from __future__ import annotations

import os

# vendor_id of /proc/cpuinfo -> the largest input (elements) of a 1x1 conv that runs as a product
MEASURED = {"GenuineIntel": float("inf"), "AuthenticAMD": float(1 << 20)}
DEFAULT = float(1 << 20)
ENV = "METAPRUNE_POINTWISE_MAX_ELEMENTS"  # an integer, or "inf": overrides the rule (to measure another CPU)


def cpu_vendor() -> str | None:
    """``vendor_id`` from ``/proc/cpuinfo`` (Linux x86), else None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def parse_limit(text: str) -> float:
    """``"inf"`` or a non-negative integer count of elements; ValueError naming what is accepted."""
    t = text.strip().lower()
    if t in ("inf", "all"):
        return float("inf")
    try:
        n = int(t)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"{ENV}={text!r}; accepted: a non-negative integer (input elements) or 'inf'")
    return float(n)


def default_max_elements(vendor: str | None = None, environ: dict | None = None) -> float:
    """The limit for this CPU: ``$METAPRUNE_POINTWISE_MAX_ELEMENTS`` if set, else :data:`MEASURED` for
    the CPU's vendor, else :data:`DEFAULT`."""
    env = (os.environ if environ is None else environ).get(ENV)
    if env:
        return parse_limit(env)
    return MEASURED.get(vendor if vendor is not None else (cpu_vendor() or ""), DEFAULT)
