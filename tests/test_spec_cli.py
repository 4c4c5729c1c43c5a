import json

import numpy as np
import pytest
import torch

from metaprune import build_model, count_cost, get_space, load_spec, make_spec, save_spec

SMALL = {"input_size": 32, "small_input": True, "num_classes": 10, "width_mult": 0.35}


def _random_spec_file(name, tmp_path, seed=0):
    opts = {**SMALL, "width_mult": 0.5} if name == "shufflenet_v2" else SMALL
    sp = get_space(name, **opts)
    rng = np.random.default_rng(seed)
    spec = make_spec(sp, {u.name: int(rng.choice(u.choices)) for u in sp.units})
    return save_spec(spec, tmp_path / f"{name}.json")


@pytest.fixture
def spec_file(tmp_path):
    sp = get_space("mobilenet_v2", **SMALL)
    rng = np.random.default_rng(0)
    spec = make_spec(sp, {u.name: int(rng.choice(u.choices)) for u in sp.units},
                     metrics={"top1": 0.5}, provenance={"run": "x"})
    return save_spec(spec, tmp_path / "spec.json")


def test_spec_round_trip(spec_file):
    spec = load_spec(spec_file)
    doc = json.loads(spec_file.read_text())
    assert doc["format"] == "metaprune.subnet/1" and doc["space"] == "mobilenet_v2"
    assert list(doc["channels"]) == list(spec.space.unit_names)
    assert spec.to_dict() == doc
    assert spec.metrics == {"top1": 0.5} and spec.provenance == {"run": "x"}


def test_off_grid_counts_are_accepted(tmp_path):
    sp = get_space("mobilenet_v1", input_size=32, num_classes=10)
    ch = {u.name: u.max - 1 for u in sp.units}  # e.g. a vector from a paper
    assert any(c not in sp.unit(n).choices for n, c in ch.items())
    spec = load_spec(save_spec(make_spec(sp, ch), tmp_path / "s.json"))
    assert spec.channels == ch and count_cost(spec)["macs"] > 0


def _mutate(doc, path, value):
    d = doc
    for key in path[:-1]:
        d = d[key]
    if value is KeyError:
        del d[path[-1]]
    else:
        d[path[-1]] = value
    return doc


@pytest.mark.parametrize("path, value, needle", [
    (("channels", "stem"), KeyError, "missing unit 'stem'"),
    (("channels", "bogus"), 3, "unknown unit 'bogus'"),
    (("space",), "vgg16", "unknown space 'vgg16'"),
    (("options", "depth"), 3, "unknown option 'depth'"),
    (("channels", "stem"), 0, "channels.stem=0 is not a positive integer"),
    (("channels", "stem"), 2.5, "channels.stem=2.5 is not a positive integer"),
    (("channels", "stem"), "8", "channels.stem='8' is not a positive integer"),
    (("channels", "stem"), 10**6, "over the unit's max"),
    (("format",), "metaprune.subnet/2", "newer than this metaprune reads"),
    (("format",), "something/1", "is not a subnet spec"),
    (("extra",), 1, "unknown field 'extra'"),
])
def test_bad_specs_fail_with_one_line(spec_file, cli, path, value, needle):
    doc = _mutate(json.loads(spec_file.read_text()), path, value)
    spec_file.write_text(json.dumps(doc))
    code, out, err = cli("cost", spec_file)
    assert code == 2
    assert needle in err and err.startswith("metaprune: error:") and err.count("\n") == 1


def test_unreadable_spec_files(cli, tmp_path):
    code, _, err = cli("cost", tmp_path / "missing.json")
    assert code == 2 and "does not exist" in err
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = cli("cost", tmp_path / "bad.json")
    assert code == 2 and "not valid JSON" in err


def test_cost_cli_matches_api(spec_file, cli):
    code, out, _ = cli("cost", spec_file, "--json")
    assert code == 0 and json.loads(out) == count_cost(load_spec(spec_file))
    code, out, _ = cli("cost", spec_file)
    assert code == 0 and "FLOPs = 2 x MACs" in out


def test_space_list_and_show(cli):
    code, out, _ = cli("space", "list")
    assert code == 0 and "mobilenet_v1" in out and "resnet50" in out
    code, out, _ = cli("space", "show", "mobilenet_v2", "-o", "width_mult=1.0", "-o", "round_to=8", "--json")
    info = json.loads(out)
    assert code == 0 and {"space", "options", "units", "min_macs", "max_macs"} <= set(info)
    assert info["max_macs"] == 300_774_272 and info["min_macs"] < info["max_macs"]
    assert all({"name", "max", "choices"} <= set(u) for u in info["units"])
    code, out, _ = cli("space", "show", "resnet50")
    assert code == 0 and "layer1.0.mid" in out and "largest:" in out


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2"])
def test_compact_backbones_show_cost_and_build(name, cli, tmp_path):
    import onnxruntime as ort

    code, out, _ = cli("space", "show", name, "--json")
    sp = get_space(name)
    assert code == 0 and json.loads(out)["max_macs"] == count_cost(make_spec(sp, sp.max_channels()))["macs"]
    spec_file = _random_spec_file(name, tmp_path, seed=1)
    code, out, _ = cli("cost", spec_file, "--json")
    assert code == 0 and json.loads(out) == count_cost(load_spec(spec_file))
    code, _, err = cli("build", spec_file, "--format", "onnx", "-o", tmp_path / "m.onnx")
    assert code == 0, err
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": np.zeros((2, 3, 32, 32), np.float32)})[0].shape == (2, 10)


def test_cost_and_space_show_in_the_metapruning_convention(spec_file, cli):
    code, out, _ = cli("cost", spec_file, "--convention", "metapruning", "--json")
    c = json.loads(out)
    assert code == 0 and c["flops_metapruning"] > c["macs"] == count_cost(load_spec(spec_file))["macs"]
    code, out, _ = cli("space", "show", "mobilenet_v2", "-o", "variant=metapruning", "--convention", "metapruning")
    assert code == 0 and "stage1.0.expand" in out and "MetaPruning's counter: 13.81M to 579.30M FLOPs" in out


@pytest.mark.parametrize("args, needle", [
    (("space", "show", "mobilenet_v2", "-o", "variant=paper"), "accepted: torchvision, metapruning"),
    (("cost", "x.json", "--convention", "paper"), "'paper' is not one of 'macs', 'metapruning'"),
    (("space", "show", "mobilenet_v2", "-o", "bogus=1"), "unknown option 'bogus'"),
    (("space", "show", "mobilenet_v2", "-o", "width_mult"), "is not key=value"),
    (("space", "show", "nope"), "unknown space 'nope'"),
    (("build", "x.json", "--format", "tflite", "-o", "y"), "tflite"),
    (("space", "frobnicate"), "frobnicate"),
])
def test_cli_user_errors_are_one_line(cli, args, needle):
    code, out, err = cli(*args)
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_build_cli_writes_runnable_files(spec_file, cli, tmp_path):
    import onnxruntime as ort

    for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.pt")):
        code, _, err = cli("build", spec_file, "--format", fmt, "-o", tmp_path / name)
        assert code == 0, err
    x = torch.randn(2, 3, 32, 32)
    assert torch.jit.load(str(tmp_path / "m.pt"))(x).shape == (2, 10)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": x.numpy()})[0].shape == (2, 10)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2"])
def test_exports_compute_what_torch_computes(name, spec_file, tmp_path):
    """ONNX (onnxruntime alone) and TorchScript outputs equal the torch model's within 1e-4
    (hard-swish, squeeze-excitation and channel shuffle included)."""
    import onnxruntime as ort

    from metaprune.export import export_model

    if name != "mobilenet_v2":
        spec_file = _random_spec_file(name, tmp_path)
    spec = load_spec(spec_file)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    with torch.no_grad():
        model.classifier.fc.weight.normal_(0, 1.0)  # logits of order 1-10, not 0.01
        if hasattr(model.classifier, "hidden"):
            model.classifier.hidden.weight.normal_(0, model.classifier.hidden.in_features ** -0.5)
        for m in model.modules():  # non-trivial BN statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    export_model(model, tmp_path / "m.onnx", "onnx", 32, 3)
    export_model(model, tmp_path / "m.pt", "torchscript", 32, 3)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(ref).max() > 1.0
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - ref).max() < 1e-4
    with torch.no_grad():
        ts = torch.jit.load(str(tmp_path / "m.pt"))(x).numpy()
    assert np.abs(ts - ref).max() < 1e-4
