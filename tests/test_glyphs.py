"""The ``glyphs`` dataset: characters rendered from Debian font packages, split by font.

The tests that render need the fonts of Debian packages (``bash scripts/setup.sh`` installs them as
root); where they are missing those tests skip, saying which package is missing.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from metaprune import UserError
from metaprune.data import glyphs as G
from metaprune.data import load_data
from metaprune.data.splits import fingerprints

# a small font list for the tests that build a dataset: 18 fonts, two families of clones inside
SMALL = {"fonts-dejavu-core": G.FONT_PACKAGES["fonts-dejavu-core"],
         "fonts-croscore": G.FONT_PACKAGES["fonts-croscore"],
         "fonts-liberation": ("truetype/liberation/LiberationSans-*.ttf",)}


def _missing(packages) -> str | None:
    try:
        G.list_fonts(G.font_root(None), packages)
    except UserError as e:
        return str(e)
    return None


def _need(packages):
    why = _missing(packages)
    if why is not None:
        pytest.skip(f"needs the Debian font packages: {why}")


@pytest.fixture
def small_fonts(tmp_path):
    """A font directory laid out like /usr/share/fonts holding copies of the SMALL list's files."""
    _need(SMALL)
    root = Path(G.FONT_ROOT)
    dst = tmp_path / "fonts"
    for f in G.list_fonts(root, SMALL):
        (dst / f.rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / f.rel, dst / f.rel)
    return dst


def test_every_package_of_the_list_is_installed_with_its_fonts():
    _need(G.FONT_PACKAGES)
    fonts = G.list_fonts(G.font_root(None))
    assert {f.package for f in fonts} == set(G.FONT_PACKAGES)
    assert len(fonts) >= 250 and all(len(f.sha256) == 64 for f in fonts)


def test_missing_package_and_bad_font_dir_are_refused_in_one_line(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="font package fonts-dejavu-core is missing.*apt-get install fonts-dejavu-core"):
        G.list_fonts(tmp_path / "empty")
    for bad in (tmp_path / "empty", tmp_path / "nowhere"):
        code, out, err = cli("train-pruningnet", "-c", "quickstart", "--run-dir", tmp_path / "run", "--quiet",
                             "--set", "data.name=glyphs", "--set", f"data.font_dir={bad}",
                             "--set", f"data.root={tmp_path / 'data'}")
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert ("fonts-dejavu-core" in err) if bad.name == "empty" else ("not a directory" in err)


def test_clones_are_grouped_and_styles_of_a_family_share_a_group():
    _need(SMALL)
    root = Path(G.FONT_ROOT)
    rels = ["truetype/croscore/Arimo-Regular.ttf", "truetype/liberation/LiberationSans-Regular.ttf",
            "truetype/dejavu/DejaVuSans.ttf", "truetype/dejavu/DejaVuSans-Bold.ttf",
            "truetype/dejavu/DejaVuSerif.ttf", "truetype/croscore/Cousine-Regular.ttf"]
    fams = [G.family_name(root / r) for r in rels]
    clean = np.stack([G.render_font(root / r, "0" * 64, samples=1) for r in rels])
    g = G.group_fonts(fams, clean)
    assert g[0] == g[1]  # Arimo is Liberation Sans 2's design: never on both sides of the split
    assert g[2] == g[3]  # one family, two weights
    assert len({g[0], g[2], g[4], g[5]}) == 4  # different designs stay apart
    assert G.design_name("PT Sans Narrow") == "PT Sans" and G.design_name("OCRABold") == "OCRA"
    assert G.design_name("Accanthis ADF Std No2") == "Accanthis ADF"


def test_renders_are_seeded_by_the_font_and_augmented():
    _need(SMALL)
    path = Path(G.FONT_ROOT) / "truetype/dejavu/DejaVuSans.ttf"
    a, b = G.render_font(path, "1" * 64), G.render_font(path, "1" * 64)
    c = G.render_font(path, "2" * 64)
    assert a.shape == (62 * G.SAMPLES_PER_GLYPH, 32, 32) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)  # same digest, same images
    assert np.array_equal(a[::G.SAMPLES_PER_GLYPH], c[::G.SAMPLES_PER_GLYPH])  # clean renders agree
    assert not np.array_equal(a[0], a[1])  # augmented differs from clean
    ink = a[::G.SAMPLES_PER_GLYPH].reshape(62, -1).astype(float).sum(1)
    assert ink.min() > 0 and ink[CLASS("O")] > ink[CLASS("o")]  # case survives: one size per font


def CLASS(ch: str) -> int:
    return G.CLASSES.index(ch)


def test_splits_by_font_fixed_test_fingerprinted_and_cached(small_fonts, tmp_path):
    data_root = tmp_path / "data"
    d0 = G.load_glyphs(str(data_root), str(small_fonts), 0, 3, 3, 7, packages=SMALL)
    cache = list((data_root / "glyphs").glob("glyphs-*.npz"))
    assert len(cache) == 1
    with np.load(cache[0], allow_pickle=False) as z:
        groups, paths = z["font_group"], list(z["font_path"])
    assert d0.num_classes == 62 and d0.image_size == 32 and d0.in_channels == 1
    assert sorted(np.unique(d0.train.labels.numpy()).tolist()) == list(range(62))
    assert d0.info["fonts"]["test"] >= 1 and d0.info["fonts"]["search"] >= 1
    assert d0.info["test"] == 62 * G.SAMPLES_PER_GLYPH * d0.info["fonts"]["test"]
    # whole groups per split: Arimo and Liberation Sans (clones) always fall on the same side
    arimo, lib = paths.index("truetype/croscore/Arimo-Regular.ttf"), paths.index(
        "truetype/liberation/LiberationSans-Regular.ttf")
    assert groups[arimo] == groups[lib]
    for seed in range(6):
        split = G.assign_splits(groups, 2, 2, seed, 7)
        for g in np.unique(groups):
            assert len(set(split[groups == g])) == 1
    assert len({tuple(G.assign_splits(groups, 2, 2, s, 7)) for s in range(6)}) > 1  # search varies with the seed
    assert len({tuple(G.assign_splits(groups, 2, 2, s, 7) == 2) for s in range(6)}) == 1  # test does not
    d1 = G.load_glyphs(str(data_root), str(small_fonts), 1, 3, 3, 7, packages=SMALL)  # from the cache
    f0, f1 = fingerprints(d0), fingerprints(d1)
    assert f0["test"] == f1["test"] and f0["source"] == f1["source"] and f0["source"].startswith("fonts:")
    # a changed font file is another dataset: another cache, another source fingerprint
    victim = small_fonts / "truetype/dejavu/DejaVuSerif.ttf"
    shutil.copyfile(small_fonts / "truetype/dejavu/DejaVuSerif-Bold.ttf", victim)
    d2 = G.load_glyphs(str(data_root), str(small_fonts), 0, 3, 3, 7, packages=SMALL)
    assert fingerprints(d2)["source"] != f0["source"]
    assert len(list((data_root / "glyphs").glob("glyphs-*.npz"))) == 2
    with pytest.raises(UserError, match="data.test_per_class/search_per_class"):
        G.load_glyphs(str(data_root), str(small_fonts), 0, 3, 3000, 7, packages=SMALL)


def test_setup_script_installs_exactly_the_list():
    import re
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    script = (repo / "scripts" / "setup.sh").read_text()
    cmd = re.search(r"^fonts=\$\((sed .*)\)$", script, re.M).group(1)
    out = subprocess.run(["bash", "-c", cmd], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert out.split() == list(G.FONT_PACKAGES)
