"""Predicted against measured latency of one subnet spec."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from pruningnet.build import build_model
from pruningnet.spec import SubnetSpec

from .table import LatencyTable
from .timing import measure_model_ms


@dataclass(frozen=True)
class CheckResult:
    """Table prediction and end-to-end median of one built network, in ms; error = pred/meas - 1."""

    predicted_ms: float
    measured_ms: float
    error_pct: float
    device: str
    threads: int
    batch_size: int
    clock: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_spec(spec: SubnetSpec, table: LatencyTable) -> CheckResult:
    """Predict ``spec``'s latency from ``table`` (measuring missing entries) and time the built model
    end to end under the table's device, threads, batch size and clock."""
    predicted = float(table.predict_ms(spec.space, spec.channels)[0])
    opts = spec.space.options
    k = table.key
    measured = measure_model_ms(build_model(spec), opts["input_size"], opts["in_channels"], k.device,
                                k.batch_size, k.threads, table.model_timing())
    return CheckResult(round(predicted, 4), round(measured, 4), round(100 * (predicted / measured - 1), 2),
                       k.device, k.threads, k.batch_size, table.timing.clock)
