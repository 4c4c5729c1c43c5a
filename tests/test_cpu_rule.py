"""Issue 31: the per-CPU rule for generated 1x1 convs, and NCHW input taken as fast as channels-last."""
import math

import pytest
import torch

from metaprune import get_space
from pruningnet import hypernet, pointwise
from pruningnet.hypernet import PruningNet


@pytest.mark.parametrize("vendor, environ, want", [
    ("GenuineIntel", {}, math.inf),
    ("AuthenticAMD", {}, float(1 << 20)),
    ("SomeOtherVendor", {}, pointwise.DEFAULT),
    ("", {}, pointwise.DEFAULT),
    ("GenuineIntel", {pointwise.ENV: "4096"}, 4096.0),
    ("AuthenticAMD", {pointwise.ENV: "inf"}, math.inf),
    ("AuthenticAMD", {pointwise.ENV: "0"}, 0.0),
])
def test_rule_by_vendor_and_override(vendor, environ, want):
    assert pointwise.default_max_elements(vendor, environ) == want


@pytest.mark.parametrize("bad", ["-1", "1e6", "lots", "2.5"])
def test_bad_override_is_one_line_naming_the_value(bad):
    with pytest.raises(ValueError, match=rf"{pointwise.ENV}='{bad}'; accepted: a non-negative integer"):
        pointwise.default_max_elements("GenuineIntel", {pointwise.ENV: bad})


def test_the_limit_decides_product_or_conv(monkeypatch):
    x = torch.randn(2, 8, 4, 4)
    monkeypatch.setattr(hypernet, "POINTWISE_MATMUL_MAX_ELEMENTS", x.numel())
    assert hypernet._as_matmul(x)
    monkeypatch.setattr(hypernet, "POINTWISE_MATMUL_MAX_ELEMENTS", x.numel() - 1)
    assert not hypernet._as_matmul(x)
    monkeypatch.setattr(hypernet, "POINTWISE_MATMUL_MAX_ELEMENTS", None)  # the rule of this machine's CPU
    assert hypernet.pointwise_max_elements() == pointwise.default_max_elements()


@pytest.mark.parametrize("name, opts", [("mobilenet_v2", {"width_mult": 0.25, "small_input": True, "input_size": 32}),
                                         ("shufflenet_v2", {"width_mult": 0.5, "small_input": True})])
def test_nchw_input_runs_as_channels_last(name, opts, monkeypatch):
    """The PruningNet converts NCHW input once on the CPU: the same computation (bit for bit) and the
    same gradients as channels-last input; with the conversion off, NCHW takes another path."""
    sp = get_space(name, **opts)
    torch.manual_seed(0)
    net = PruningNet(sp, hidden=4)
    x = torch.randn(4, 3, 32, 32)
    ch = sp.uniform_channels(0.75)

    def run(inp):
        net.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # dropout
        out = net(inp, ch)
        out.square().sum().backward()
        return out.detach(), {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}

    a, ga = run(x)
    b, gb = run(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(a, b) and ga.keys() == gb.keys()
    assert all(torch.equal(ga[k], gb[k]) for k in ga)
    monkeypatch.setattr(hypernet, "CHANNELS_LAST_INPUT_DEVICES", ())
    c, _ = run(x)
    assert torch.allclose(a, c, atol=1e-4, rtol=1e-4) and not torch.equal(a, c)


def test_cli_refuses_a_bad_override_before_any_command(monkeypatch, capsys):
    from metaprune.cli.main import main

    monkeypatch.setenv(pointwise.ENV, "lots")
    assert main(["space", "list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"metaprune: error: {pointwise.ENV}='lots'; accepted: a non-negative integer (input elements) or 'inf'"]
    monkeypatch.setenv(pointwise.ENV, "inf")
    assert main(["space", "list"]) == 0
