"""Latency lookup tables: per-layer latencies measured on this machine, summed per network.

Public interface: :func:`build_table`, :func:`load_table`, :class:`LatencyTable` (``predict_ms``),
:func:`default_table_path`, :func:`measure_model_ms`.
"""
from .check import CheckResult, check_spec
from .machine import MachineKey, current_key
from .table import (FORMAT, LatencyKeyWarning, LatencyTable, build_table, default_table_path, load_table,
                    space_key)
from .timing import TimingConfig, measure_model_ms

__all__ = ["CheckResult", "check_spec", "MachineKey", "current_key", "FORMAT", "LatencyKeyWarning", "LatencyTable", "build_table",
           "default_table_path", "load_table", "space_key", "TimingConfig", "measure_model_ms"]
