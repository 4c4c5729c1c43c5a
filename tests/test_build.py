"""The static builder reads the lowered layer list alone, and its state_dict names do not change."""
import dataclasses
import hashlib

import pytest
import torch

from metaprune import build_model, get_space, list_spaces, make_spec
from pruningnet.spaces.ir import resolve

# sha256 (first 16 hex) of build_model's "name shape" lines (num_classes=10), recorded from the
# node-walking builder this one replaced (issue 28): exported checkpoints are loaded by these names
DIGESTS = {
    "mobilenet_v1": ("521c51120ca28520", "596f9df0fe9ea4ae"),
    "mobilenet_v2": ("ea5cd26bb09e6015", "478d91dd740a2ce9"),
    "mobilenet_v3_large": ("623361a89adb05f8", "f20b086625c41939"),
    "mobilenet_v3_small": ("ba8fba427cfa2bc2", "b391fb914b59f95d"),
    "resnet50": ("3be052a8b01db684", "a13e375607a4aaa6"),
    "shufflenet_v2": ("0d060329c5766b83", "237a31f4fd06233a"),
}


def _shapes(space, channels) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # names and shapes only: no memory, no init cost
        model = build_model(make_spec(space, channels), init=False)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _expected(space, channels) -> dict[str, tuple[int, ...]]:
    """The state_dict the lowering implies: every weighted layer under its module path."""
    out = {}
    for x in space.weighted_layers():
        cin, cout = resolve(x.in_ch, channels), resolve(x.out_ch, channels)
        if x.kind == "linear":
            out[f"{x.path}.weight"] = (cout, cin)
        else:
            per_group = 1 if x.depthwise else cin // x.groups
            out[f"{x.path}.conv.weight" if x.bn else f"{x.path}.weight"] = (cout, per_group, x.kernel, x.kernel)
        if x.bias:
            out[f"{x.path}.bias"] = (cout,)
        if x.bn:
            out.update({f"{x.path}.bn.{n}": (cout,) for n in ("weight", "bias", "running_mean", "running_var")})
            out[f"{x.path}.bn.num_batches_tracked"] = ()
    return out


def test_digests_cover_every_hand_written_space():
    assert sorted(DIGESTS) == list_spaces()


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_state_dict_is_the_lowering_and_unchanged(name):
    sp = get_space(name, num_classes=10)
    for channels, digest in zip((sp.max_channels(), sp.uniform_channels(0.5)), DIGESTS[name]):
        shapes = _shapes(sp, channels)
        assert shapes == _expected(sp, channels)
        text = "\n".join(f"{k} {v}" for k, v in shapes.items())
        assert hashlib.sha256(text.encode()).hexdigest()[:16] == digest
    # the builder reads no node: a space stripped of its nodes builds the same network
    bare = dataclasses.replace(sp, nodes=())
    ch = sp.uniform_channels(0.5)
    assert _shapes(bare, ch) == _shapes(sp, ch)
    with torch.device("meta"):
        assert str(build_model(make_spec(bare, ch), init=False)) == str(build_model(make_spec(sp, ch), init=False))
