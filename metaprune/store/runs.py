"""The run store: one directory per meta-trained PruningNet, holding everything later jobs need.

Layout::

    RUN/config.yaml        resolved config (seed included)
    RUN/space.json         {"space": NAME, "options": {...}}: the resolved space
    RUN/split.json         dataset, seed, split sizes and split fingerprints
    RUN/metrics.jsonl      one JSON line per logged step
    RUN/checkpoints/last.pt  meta-training checkpoint (written atomically)
    RUN/pruningnet.pt      the trained PruningNet
    RUN/status.json        {"state": "running"|"done", ...}
    RUN/search/  RUN/latency/  RUN/train/  RUN/exports/   later jobs
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pruningnet.errors import UserError
from pruningnet.spaces import Space, get_space

from ..config import dump_yaml, from_dict, read_yaml, to_dict
from ..data import DataConfig, DataSplits
from ..data.splits import fingerprints
from .fileio import load_weights, open_regular, write_json, write_text
from ..metatrain.config import MetaTrainConfig
from .schemas import PRUNINGNET, SPACE_FILE, SPLIT_FILE

PRUNINGNET_FILE = "pruningnet.pt"


def resolve_space(cfg: MetaTrainConfig, data: DataSplits | None = None) -> Space:
    """The config's space, with input channels, classes and size taken from the data if unset."""
    opts = dict(cfg.space.options)
    if data is not None:
        opts.setdefault("in_channels", data.in_channels)
        opts.setdefault("num_classes", data.num_classes)
        opts.setdefault("input_size", data.image_size)
    return get_space(cfg.space.name, **opts)


@dataclass
class Run:
    """An opened run directory."""

    path: Path
    config: MetaTrainConfig
    space: Space

    @property
    def seed(self) -> int:
        return self.config.seed

    def load_data(self, data_config: DataConfig | None = None) -> DataSplits:
        """The run's splits, carved with the run's seed from its own data section or ``data_config``
        (a scratch recipe's: the same data moved, read with more workers); :class:`UserError` when
        they are not the ones the run was created with (its ``split.json`` fingerprints), since a
        search would then score candidates on images the PruningNet trained on, and scratch training
        could train on the search split."""
        f = self.path / "split.json"
        recorded = SPLIT_FILE.read(f).get("fingerprints") if os.path.lexists(f) else None
        data = (data_config or self.config.data).load(self.config.seed)
        if recorded:
            now = fingerprints(data)
            changed = [k for k, v in recorded.items() if v is not None and now.get(k) != v]
            if changed:
                raise UserError(f"run {str(self.path)!r}: the {'/'.join(changed)} split(s) of dataset "
                                f"{data.name!r} differ from the ones the run was created with (data or "
                                "metaprune's split code changed); a search would score, and scratch "
                                "training could train, on images the PruningNet or the search saw. Point "
                                "data.root at the run's data, or meta-train a new run on the current data")
        return data

    def pruningnet_fingerprint(self) -> str | None:
        """SHA-256 (16 hex digits) of ``pruningnet.pt``: scores of two PruningNets never mix."""
        import hashlib

        f = self.path / PRUNINGNET_FILE
        if not os.path.lexists(f):
            return None
        h = hashlib.sha256()
        with os.fdopen(open_regular(f, "PruningNet weights", follow=False), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()[:16]

    def has_pruningnet(self) -> bool:
        return os.path.lexists(self.path / PRUNINGNET_FILE)  # a FIFO there is refused when it is read

    def load_pruningnet(self, device: str = "cpu"):
        """The trained PruningNet, in eval mode, on ``device``."""
        from pruningnet.hypernet import PruningNet

        f = self.path / PRUNINGNET_FILE
        if not os.path.lexists(f):
            raise UserError(f"run {str(self.path)!r} has no trained PruningNet; run "
                            f"`metaprune train-pruningnet --resume {self.path}` to finish it")
        blob = PRUNINGNET.check(load_weights(f, "PruningNet weights", map_location=device, follow=False), f)
        net = PruningNet(self.space, hidden=self.config.model.hidden,
                         generator_input=self.config.model.generator_input)
        try:
            net.load_state_dict(blob)
        except (RuntimeError, TypeError, AttributeError):
            raise UserError(f"PruningNet weights {str(f)!r} do not fit the run's space and config "
                            "(another run's file?); meta-train this run again") from None
        return net.to(device).eval()


def create_run(path: Path, cfg: MetaTrainConfig, space: Space, data: DataSplits) -> Run:
    """Write the resolved space, split and config of a new run (config.yaml last: it marks a run)."""
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "space.json", {"space": space.name, "options": space.options})
    write_json(path / "split.json", {"dataset": data.name, "seed": cfg.seed, **data.info,
                                     "fingerprints": fingerprints(data)})
    write_text(path / "config.yaml", dump_yaml(to_dict(cfg)))
    return Run(path, cfg, space)


def open_run(path: str | Path) -> Run:
    """Open an existing run directory; a missing or foreign directory raises :class:`UserError`."""
    p = Path(path)
    if not os.path.lexists(p / "config.yaml") or not os.path.lexists(p / "space.json"):
        raise UserError(f"{str(p)!r} is not a metaprune run (no config.yaml and space.json); "
                        "create one with `metaprune train-pruningnet -c CONFIG --run-dir DIR`")
    cfg_file = p / "config.yaml"
    try:
        cfg = from_dict(MetaTrainConfig, read_yaml(cfg_file, "run config", follow=False))
    except UserError as e:
        msg = str(e)
        raise UserError(msg if str(cfg_file) in msg else f"run config {str(cfg_file)!r} is damaged: {msg}; "
                        "restore it or meta-train a new run") from None
    sp = SPACE_FILE.read(p / "space.json")
    try:
        space = get_space(sp["space"], **sp["options"])
    except UserError as e:
        raise UserError(f"run space file {str(p / 'space.json')!r} is damaged: {e}") from None
    return Run(p, cfg, space)
