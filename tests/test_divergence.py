"""The divergence guard: a loss far above its running minimum is reported, once per episode."""
import json
import os

from metaprune.metatrain.divergence import DivergenceGuard

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _feed(guard, losses):
    return [i for i, v in enumerate(losses) if guard.update(v) is not None]


def test_guard_reports_a_rise_once_and_rearms_after_recovery():
    falling = [2.3 - 0.01 * i for i in range(100)]  # 2.3 -> 1.31
    spike = [5.0] * 10
    g = DivergenceGuard()
    hits = _feed(g, falling + spike + falling[-20:] + spike)
    assert len(hits) == 2 and g.spikes == 2
    assert 100 <= hits[0] < 110 and hits[1] >= 130


def test_guard_ignores_noise_and_slow_learning():
    import numpy as np

    rng = np.random.default_rng(0)
    losses = 2.3 * np.exp(-np.arange(300) / 100) + 0.5 + rng.normal(0, 0.15, 300)
    g = DivergenceGuard()
    assert _feed(g, list(losses)) == [] and g.spikes == 0


def test_guard_state_round_trips():
    g = DivergenceGuard()
    _feed(g, [2.0, 1.0, 4.0, 4.0, 4.0, 4.0])
    h = DivergenceGuard()
    h.load_state_dict(json.loads(json.dumps(g.state_dict())))
    assert h.state_dict() == g.state_dict() and h.spikes == 1


def test_meta_training_reports_a_blow_up_in_metrics_and_on_stderr(tmp_path, cli):
    """A wildly high learning rate (clipped, so no NaN) makes the loss climb far above its minimum:
    the run finishes but says so on stderr and in metrics.jsonl and status.json."""
    run = tmp_path / "spiky"
    code, out, err = cli("train-pruningnet", "-c", os.path.join(REPO, "configs", "smoke.yaml"), "--run-dir",
                         str(run), "--quiet", "--set", "data.name=synthetic",
                         "--set", "space.options.width_mult=0.25", "--set", "space.options.ratios=[0.5,0.75,1.0]",
                         "--set", "model.hidden=4", "--set", "train.batch_size=32", "--set", "train.max_steps=40",
                         "--set", "train.lr=1000", "--set", "train.warmup_steps=20", "--set", "train.grad_clip=1.0")
    assert code == 0, err
    events = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    spikes = [e for e in events if e.get("event") == "loss_spike"]
    assert spikes and all(e["loss_ema"] > 1.5 * e["running_min"] for e in spikes)
    assert "loss spike at step" in err and "train.lr" in err
    assert json.loads((run / "status.json").read_text())["loss_spikes"] == len(spikes)
