"""A guard that notices meta-training going wrong before the loss is NaN.

MetaPruning-style meta-training can blow up without ever producing a NaN: the smoke run of issue 11
went from loss 2.4 to 8 and limped back to 2.0, leaving a PruningNet that barely learned. The guard
follows an exponential moving average of the loss and reports when it rises to ``factor`` times its
running minimum (and at least ``min_rise`` above it); it re-arms once the average is back under
the midpoint, so one episode is reported once.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DivergenceGuard:
    factor: float = 1.5
    min_rise: float = 0.5
    smoothing: float = 0.8  # EMA weight of the past: about a 5-step window
    ema: float | None = None
    running_min: float = float("inf")
    armed: bool = True
    spikes: int = 0

    def update(self, loss: float) -> dict | None:
        """Feed one step's loss; returns the episode's record the first step it is over the line."""
        self.ema = loss if self.ema is None else self.smoothing * self.ema + (1 - self.smoothing) * loss
        self.running_min = min(self.running_min, self.ema)
        limit = max(self.factor * self.running_min, self.running_min + self.min_rise)
        if self.armed and self.ema > limit:
            self.armed = False
            self.spikes += 1
            return {"loss_ema": round(self.ema, 5), "running_min": round(self.running_min, 5)}
        if not self.armed and self.ema < (limit + self.running_min) / 2:
            self.armed = True
        return None

    def state_dict(self) -> dict:
        return {"ema": self.ema, "running_min": self.running_min, "armed": self.armed, "spikes": self.spikes}

    def load_state_dict(self, state: dict) -> None:
        self.ema, self.running_min = state["ema"], state["running_min"]
        self.armed, self.spikes = state["armed"], state["spikes"]
