"""Non-dominated filtering and hypervolume of minimisation objectives."""
from __future__ import annotations

import moocore
import numpy as np


def nondominated_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``points`` (N, M; all minimised) that no other row dominates.

    Duplicated points are all kept.
    """
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(moocore.is_nondominated(pts, keep_weakly=True), dtype=bool)


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume dominated by ``points`` (all objectives minimised) up to reference point ``ref``.

    Points not strictly better than ``ref`` in every objective add nothing.
    """
    pts = np.asarray(points, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    pts = pts[np.all(pts < ref, axis=1)] if len(pts) else pts
    if len(pts) == 0:
        return 0.0
    return float(moocore.hypervolume(pts, ref=ref))
