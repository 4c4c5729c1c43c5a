import pytest

from metaprune import UserError, get_space, list_spaces
from pruningnet.spaces import METAPRUNING_RATIOS


def test_list_spaces_has_the_five_backbones():
    assert {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "resnet50",
            "shufflenet_v2"} <= set(list_spaces())
    assert list_spaces("mobilenet_v*") == ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large",
                                           "mobilenet_v3_small"]


def test_metapruning_ratio_grid():
    assert len(METAPRUNING_RATIOS) == 31
    assert METAPRUNING_RATIOS[0] == 0.10 and METAPRUNING_RATIOS[-1] == 1.00


def test_mobilenet_v1_units_in_run_order():
    sp = get_space("mobilenet_v1")
    assert sp.unit_names == ("stem",) + tuple(f"pw{i}" for i in range(1, 14))
    assert sp.unit("pw13").max == 1024
    # floor(max * ratio), MetaPruning's rule
    assert sp.unit("stem").choices[0] == 3 and sp.unit("stem").choices[-1] == 32


def test_mobilenet_v2_units():
    sp = get_space("mobilenet_v2", width_mult=1.0, round_to=8)
    names = sp.unit_names
    assert len([n for n in names if n.endswith(".expand")]) == 16
    assert [n for n in names if n.startswith("stage") and "." not in n] == [f"stage{i}" for i in range(1, 8)]
    assert names[0] == "stem" and names[-1] == "last"
    assert names.index("stage2.0.expand") < names.index("stage2") < names.index("stage2.1.expand")
    assert all(c % 8 == 0 for u in sp.units for c in u.choices)
    # MetaPruning's default space is 1.4x wide
    assert get_space("mobilenet_v2").unit("stage7").max == 448


def test_resnet50_units():
    sp = get_space("resnet50")
    assert len(sp.units) == 1 + 4 + 16
    assert sp.unit("layer4").max == 2048 and sp.unit("layer1.0.mid").max == 64


def test_mobilenet_v3_units():
    large, small = get_space("mobilenet_v3_large"), get_space("mobilenet_v3_small")
    for sp, expand, se in ((large, 14, 8), (small, 10, 9)):
        names = sp.unit_names
        assert len([n for n in names if n.endswith(".expand")]) == expand
        assert len([n for n in names if n.endswith(".se")]) == se
        assert [n for n in names if n.startswith("stage")] == [f"stage{i}" for i in range(1, 6)]
        assert names[0] == "stem" and names[-2:] == ("last", "hidden")
        assert all(c % 8 == 0 for u in sp.units for c in u.choices)
    # Large's first block keeps the stem's width (residual): it has no stage unit of its own
    assert large.unit("stage1").max == 24 and large.unit("stem").max == 16
    # torchvision's squeeze width _make_divisible(expanded // 4, 8), not a quarter of the expansion
    assert large.unit("block4.expand").max == 72 and large.unit("block4.se").max == 24
    assert (large.unit("last").max, large.unit("hidden").max) == (960, 1280)
    assert (small.unit("last").max, small.unit("hidden").max) == (576, 1024)


def test_shufflenet_v2_units_and_widths():
    sp = get_space("shufflenet_v2")
    assert len(sp.units) == 1 + 3 + 16 + 1
    assert [sp.unit(f"stage{i}").max for i in (2, 3, 4)] == [58, 116, 232]  # branch widths: half of 116, ...
    assert sp.unit("stage3.5.mid").max == 116 and sp.unit("last").max == 1024
    assert get_space("shufflenet_v2", width_mult=2.0).unit("last").max == 2048
    with pytest.raises(UserError, match="width_mult=0.75 is not a ShuffleNetV2 width; accepted: 0.5, 1, 1.5, 2"):
        get_space("shufflenet_v2", width_mult=0.75)


def test_fixed_units_and_ratio_grid_options():
    sp = get_space("resnet50", fixed_units=["layer4"], ratios="0.5:1.0:0.25")
    assert sp.unit("layer4").choices == (2048,)
    assert sp.unit("layer3").choices == (512, 768, 1024)


def test_small_input_keeps_resolution():
    from pruningnet.cost import layer_table

    for name in ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2"):
        big = [x for x in layer_table(get_space(name, input_size=32)) if x.bn]
        small = [x for x in layer_table(get_space(name, input_size=32, small_input=True)) if x.bn]
        assert big[-1].out_size == 1 and small[-1].out_size == 4, name


@pytest.mark.parametrize("opts, needle", [
    ({"bogus": 1}, "unknown option 'bogus'"),
    ({"input_size": 0}, "input_size=0"),
    ({"width_mult": -1}, "width_mult=-1"),
    ({"ratios": [0, 1]}, "ratios has 0"),
    ({"ratios": "a:b"}, "ratios='a:b'"),
    ({"round_to": 1.5}, "round_to=1.5"),
    ({"fixed_units": ["nope"]}, "unknown unit 'nope'"),
    ({"small_input": "yes"}, "small_input='yes'"),
    ({"num_classes": 0}, "num_classes=0"),
])
def test_bad_options_raise_one_clear_line(opts, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace("[", r"\[")) as e:
        get_space("resnet50", **opts)
    assert "\n" not in str(e.value)


def test_unknown_space():
    with pytest.raises(UserError, match="unknown space 'vgg'.*mobilenet_v1"):
        get_space("vgg")


def test_register_duplicate_raises():
    from pruningnet.spaces import register_space

    with pytest.raises(ValueError, match="already registered"):
        register_space("resnet50", summary="x")(lambda opts: None)

