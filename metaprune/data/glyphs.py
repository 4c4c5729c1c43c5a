"""``glyphs``: Chars74K-Fnt-style characters rendered from Debian font packages, split by font.

62 classes (``0-9``, ``A-Z``, ``a-z``), 32x32 grayscale, white ink on black. Every font of a fixed
list of Debian packages (:data:`FONT_PACKAGES`; ``scripts/setup.sh`` installs them with apt where it
can) that maps all 62 characters is rendered :data:`SAMPLES_PER_GLYPH` times per character with
seeded augmentation: size, shift, a small rotation and a stroke added around the outline (the
fonts' own weights come from the families' weight files). The render is deterministic: its seeds
come from each font file's SHA-256, never from a run's seed.

Fonts are grouped before they are split: the styles of one family (name table), and families whose
clean renders are nearly identical (metric clones such as Arimo and Liberation Sans), are one
group. The test split is every image of a fixed, seeded set of groups (the same whatever the run's
seed), the search split every image of a set of training groups drawn with the run's seed, so no
font (nor its clone) is in more than one split. The arrays are cached, atomically and without
pickles, under ``DATA_ROOT/glyphs/``; the font files' SHA-256 digests name the cache and enter the
split fingerprints, so a changed font is a different dataset.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pruningnet.errors import UserError

CLASSES = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SIZE = 32
SAMPLES_PER_GLYPH = 3  # augmented renders of each character in each font
RENDER_VERSION = 1  # bump when the renderer changes: the cache is keyed on it
FONT_ROOT = "/usr/share/fonts"
#: distance (mean |pixel difference| / 255 of two fonts' clean renders of the 62 characters) below
#: which two families count as one design. Closest pairs of families measured on the list: FreeSans
#: vs Nimbus Sans 0.005, Cousine vs Liberation Mono 0.006, DejaVu Sans Mono vs Hack 0.006, Tinos
#: vs Liberation Serif 0.009, FreeSerif vs Nimbus Roman 0.009, Arimo vs Liberation Sans 0.010,
#: Noto Sans vs Open Sans 0.012, FreeMono vs Nimbus Mono PS 0.019 (clones or derivatives); then
#: a continuum of merely similar designs from 0.024 (Linux Biolinum vs Linux Libertine) up.
CLONE_DISTANCE = 0.02
#: mean and std of the clean renders' pixels (all fonts of the list), like MNIST's constants
GLYPH_STATS = ((0.0986,), (0.2746,))
TEST_FRACTION = 0.2  # of the fonts, whole groups, fixed whatever the run's seed
SEARCH_FRACTION = 0.1  # of the fonts, whole groups of the training fonts, drawn with the run's seed

#: Debian package -> glob patterns (relative to the font root) of the Latin text fonts it installs.
#: The first pattern's files must exist, or the package counts as missing.
FONT_PACKAGES: dict[str, tuple[str, ...]] = {
    "fonts-dejavu-core": ("truetype/dejavu/DejaVuSans.ttf", "truetype/dejavu/DejaVuSans-Bold.ttf",
                          "truetype/dejavu/DejaVuSansMono*.ttf", "truetype/dejavu/DejaVuSerif.ttf",
                          "truetype/dejavu/DejaVuSerif-Bold.ttf"),
    "fonts-dejavu-extra": ("truetype/dejavu/DejaVuSans-Oblique.ttf", "truetype/dejavu/DejaVuSans-BoldOblique.ttf",
                           "truetype/dejavu/DejaVuSans-ExtraLight.ttf", "truetype/dejavu/DejaVu*Condensed*.ttf",
                           "truetype/dejavu/DejaVuSerif-*Italic.ttf"),
    "fonts-liberation": ("truetype/liberation/Liberation*.ttf",),
    "fonts-freefont-ttf": ("truetype/freefont/Free*.ttf",),
    "fonts-urw-base35": ("opentype/urw-base35/NimbusSans-*.otf", "opentype/urw-base35/NimbusRoman-*.otf",
                         "opentype/urw-base35/NimbusMonoPS-*.otf", "opentype/urw-base35/NimbusSansNarrow-*.otf",
                         "opentype/urw-base35/C059-*.otf", "opentype/urw-base35/P052-*.otf",
                         "opentype/urw-base35/URWBookman-*.otf", "opentype/urw-base35/URWGothic-*.otf",
                         "opentype/urw-base35/Z003-*.otf"),
    "fonts-noto-core": ("truetype/noto/NotoSans-*.ttf", "truetype/noto/NotoSerif-*.ttf",
                        "truetype/noto/NotoSansDisplay-*.ttf", "truetype/noto/NotoSerifDisplay-*.ttf"),
    "fonts-croscore": ("truetype/croscore/*.ttf",),
    "fonts-crosextra-carlito": ("truetype/crosextra/Carlito-*.ttf",),
    "fonts-crosextra-caladea": ("truetype/crosextra/Caladea-*.ttf",),
    "fonts-open-sans": ("truetype/open-sans/OpenSans-*.ttf",),
    "fonts-lato": ("truetype/lato/Lato-*.ttf",),
    "fonts-go": ("fonts-go/Go-Regular.ttf", "fonts-go/Go-Italic.ttf", "fonts-go/Go-Bold*.ttf",
                 "fonts-go/Go-Medium*.ttf", "fonts-go/Go-Mono*.ttf"),  # not Go-Smallcaps: a = A there
    "fonts-cantarell": ("opentype/cantarell/Cantarell-*.otf",),
    "fonts-linuxlibertine": ("opentype/linux-libertine/LinLibertine_R.otf",
                             "opentype/linux-libertine/LinLibertine_*.otf",
                             "opentype/linux-libertine/LinBiolinum_R*.otf"),
    "fonts-ebgaramond": ("opentype/ebgaramond/EBGaramond*.otf",),
    "fonts-sil-gentium": ("truetype/gentium/Gentium-*.ttf",),
    "fonts-oldstandard": ("truetype/fonts-oldstandard/OldStandard-*.ttf",),
    "fonts-quicksand": ("truetype/quicksand/Quicksand-*.ttf",),
    "fonts-comfortaa": ("truetype/comfortaa/Comfortaa-*.ttf",),
    "fonts-jura": ("opentype/jura/Jura-*.otf",),
    "fonts-paratype": ("truetype/paratype/PT*.ttf",),
    "fonts-adf-accanthis": ("truetype/adf/AccanthisADF*.otf",),
    "fonts-adf-gillius": ("truetype/adf/GilliusADF*.otf",),
    "fonts-adf-universalis": ("truetype/adf/UniversalisADF*.otf",),
    "fonts-adf-baskervald": ("truetype/adf/BaskervaldADF*.otf",),
    "fonts-adf-berenis": ("truetype/adf/BerenisADF*.otf",),
    "fonts-roboto-unhinted": ("truetype/roboto/unhinted/RobotoTTF/Roboto-*.ttf",
                              "truetype/roboto/unhinted/RobotoCondensed-*.ttf"),
    "fonts-hack": ("truetype/hack/Hack-*.ttf",),
    "fonts-inconsolata": ("truetype/inconsolata/Inconsolata.otf",),
    "fonts-firacode": ("truetype/firacode/FiraCode-*.ttf",),
    "fonts-yanone-kaffeesatz": ("opentype/yanone-kaffeesatz/YanoneKaffeesatz-*.otf",),
    "fonts-ocr-a": ("truetype/ocr-a/OCRA*.ttf",),
    "fonts-ocr-b": ("opentype/ocr-b/OCRB*.otf",),
    "fonts-humor-sans": ("truetype/humor-sans/Humor-Sans.ttf",),
}
INSTALL_HINT = "install it with `apt-get install {pkg}` (as root, `bash scripts/setup.sh` installs the whole list)"


@dataclass(frozen=True)
class FontFile:
    """One font file of the list: where it is (relative to the font root), its SHA-256, its package."""

    rel: str
    sha256: str
    package: str


def font_root(font_dir: str | None) -> Path:
    """The font directory to read: ``font_dir``, else ``$METAPRUNE_FONTS``, else /usr/share/fonts."""
    d = Path(font_dir or os.environ.get("METAPRUNE_FONTS") or FONT_ROOT)
    if not d.is_dir():
        raise UserError(f"glyphs: font directory {str(d)!r} is not a directory; accepted: a directory laid out "
                        f"like {FONT_ROOT} (data.font_dir, $METAPRUNE_FONTS)")
    return d


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def list_fonts(root: Path, packages: dict[str, tuple[str, ...]] | None = None) -> list[FontFile]:
    """Every font file of ``packages`` under ``root``, sorted, with its digest; a package whose first
    pattern matches nothing is refused in one line naming it."""
    packages = FONT_PACKAGES if packages is None else packages
    out: dict[str, FontFile] = {}
    for pkg, patterns in packages.items():
        first = sorted(root.glob(patterns[0]))
        if not [p for p in first if p.is_file()]:
            raise UserError(f"glyphs: font package {pkg} is missing (nothing matches {str(root / patterns[0])!r}); "
                            + INSTALL_HINT.format(pkg=pkg))
        for pat in patterns:
            for p in sorted(root.glob(pat)):
                rel = p.relative_to(root).as_posix()
                if p.is_file() and rel not in out:
                    out[rel] = FontFile(rel, _sha256(p), pkg)
    return [out[k] for k in sorted(out)]


def fonts_digest(fonts: list[FontFile]) -> str:
    """SHA-256 (16 hex digits) of the font list: paths and file digests."""
    h = hashlib.sha256(f"glyphs/{RENDER_VERSION}/{SIZE}/{SAMPLES_PER_GLYPH}/{CLASSES}".encode())
    for f in fonts:
        h.update(f"\n{f.rel}\t{f.sha256}".encode())
    return h.hexdigest()[:16]


# -- rendering -------------------------------------------------------------------------------
def covers_classes(path: Path) -> bool:
    """Whether the font maps every one of the 62 characters to a glyph (a Unicode cmap; symbol
    fonts that put pictures at letter codes have none)."""
    from fontTools.ttLib import TTFont, TTLibError

    try:
        with TTFont(str(path), lazy=True, fontNumber=0) as tt:
            cmap = tt.getBestCmap() or {}
            if any(t.platformID == 3 and t.platEncID == 0 for t in tt["cmap"].tables):
                return False
    except (TTLibError, OSError, KeyError, AssertionError, ValueError):
        return False
    return all(ord(c) in cmap for c in CLASSES)


def family_name(path: Path) -> str:
    """The typographic family (name ID 16, else 1) of a font: all its styles are one split group."""
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True, fontNumber=0) as tt:
        name = tt["name"]
        rec = name.getName(16, 3, 1, 0x409) or name.getName(1, 3, 1, 0x409) or name.getDebugName(1)
        return design_name(str(rec) if rec is not None else path.stem)


_STYLE_SUFFIX = re.compile(
    r"\s*(Bold|Italic|Oblique|Light|Medium|Condensed|Narrow|Caption|Display|Math|No\d|Std|Pro|O)$")


def design_name(family: str) -> str:
    """A family name without its style words (``OCRABold``, ``PT Sans Narrow``, ``Noto Sans
    Display``, ``Accanthis ADF Std No2``): the widths, weights and optical sizes of one design are
    one split group."""
    name = family.strip()
    while True:
        short = _STYLE_SUFFIX.sub("", name)
        if short == name or not short:
            return name
        name = short


class _Renderer:
    """Renders one font's characters at 2x, rotates, and box-filters down to 32x32."""

    SCALE = 2

    def __init__(self, path: Path):
        from PIL import ImageFont

        self.path = path
        self.canvas = SIZE * self.SCALE
        ref = 100
        f = ImageFont.truetype(str(path), ref)
        boxes = [f.getbbox(c, anchor="ls") for c in CLASSES]  # left-baseline anchored
        top = min(b[1] for b in boxes)
        bottom = max(b[3] for b in boxes)
        widest = max(b[2] - b[0] for b in boxes)
        # one size for the whole font, so case and x-height differences survive (o vs O)
        fit = 0.84 * self.canvas / max(bottom - top, widest, 1)
        self.ref_size, self.fit, self.top, self.bottom = ref, fit, top, bottom
        self._fonts: dict[int, object] = {}

    def font(self, size: int):
        from PIL import ImageFont

        if size not in self._fonts:
            self._fonts[size] = ImageFont.truetype(str(self.path), size)
        return self._fonts[size]

    def render(self, char: str, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0, angle: float = 0.0,
               stroke: int = 0) -> np.ndarray:
        from PIL import Image, ImageDraw

        size = max(4, int(round(self.ref_size * self.fit * scale)))
        font = self.font(size)
        k = size / self.ref_size
        c = self.canvas
        img = Image.new("L", (c, c), 0)
        draw = ImageDraw.Draw(img)
        l, _, r, _ = draw.textbbox((0, 0), char, font=font, anchor="ls", stroke_width=stroke)
        x = (c - (r - l)) / 2 - l + dx * c
        y = (c - k * (self.bottom - self.top)) / 2 - k * self.top + dy * c  # font's box centred
        draw.text((x, y), char, fill=255, font=font, anchor="ls", stroke_width=stroke, stroke_fill=255)
        if angle:
            img = img.rotate(angle, resample=Image.BILINEAR, fillcolor=0)
        return np.asarray(img.reduce(self.SCALE), dtype=np.uint8)


def render_font(path: Path, sha256: str, samples: int = SAMPLES_PER_GLYPH) -> np.ndarray:
    """``(62 * samples, 32, 32)`` uint8: each class ``samples`` times, class-major, the first sample of
    each class clean (no augmentation) and the rest augmented with seeds from the font's digest."""
    r = _Renderer(path)
    rng = np.random.default_rng(int(sha256[:16], 16))
    out = np.empty((len(CLASSES) * samples, SIZE, SIZE), dtype=np.uint8)
    i = 0
    for ch in CLASSES:
        for s in range(samples):
            if s == 0:
                out[i] = r.render(ch)
            else:
                out[i] = r.render(ch, scale=rng.uniform(0.75, 1.05), dx=rng.uniform(-0.08, 0.08),
                                  dy=rng.uniform(-0.08, 0.08), angle=rng.uniform(-10, 10),
                                  stroke=int(rng.choice([0, 0, 1, 2])))
            i += 1
    return out


# -- grouping --------------------------------------------------------------------------------
def group_fonts(families: list[str], clean: np.ndarray, threshold: float = CLONE_DISTANCE) -> np.ndarray:
    """Group index of each font: same family, or (transitively) a clean render within ``threshold``
    mean absolute difference of another font's. ``clean``: (F, 62, 32, 32) uint8."""
    n = len(families)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[str, int] = {}
    for i, fam in enumerate(families):
        union(i, first.setdefault(fam, i))
    flat = clean.reshape(n, -1).astype(np.float32) / 255.0
    for i in range(n):
        d = np.abs(flat[i + 1:] - flat[i]).mean(axis=1)
        for j in np.flatnonzero(d < threshold):
            union(i, i + 1 + int(j))
    roots = [find(i) for i in range(n)]
    ids = {r: k for k, r in enumerate(sorted(set(roots)))}
    return np.array([ids[r] for r in roots], dtype=np.int64)


# -- the cached arrays ----------------------------------------------------------------------
def build_arrays(root: Path, fonts: list[FontFile], samples: int = SAMPLES_PER_GLYPH) -> dict[str, np.ndarray]:
    """Render every usable font: images (N, 1, 32, 32), labels, font index, and per font its path,
    digest, family and group."""
    used, families, images = [], [], []
    for f in fonts:
        path = root / f.rel
        if not covers_classes(path):
            continue
        try:
            arr = render_font(path, f.sha256, samples)
            fam = family_name(path)
        except OSError:  # a file FreeType cannot open is not a font of the dataset
            continue
        if arr[::samples].reshape(len(CLASSES), -1).max(axis=1).min() == 0:
            continue  # a character rendered blank: the cmap promised a glyph it does not draw
        used.append(f)
        families.append(fam)
        images.append(arr)
    if len(used) < 10:
        raise UserError(f"glyphs: only {len(used)} usable fonts under {str(root)!r}; accepted: the font packages "
                        "of the list (`bash scripts/setup.sh` installs them)")
    stack = np.stack(images)  # (F, 62 * samples, 32, 32)
    clean = stack[:, ::samples]
    groups = group_fonts(families, clean)
    n_f, per = stack.shape[0], stack.shape[1]
    return {
        "images": stack.reshape(n_f * per, 1, SIZE, SIZE),
        "labels": np.tile(np.repeat(np.arange(len(CLASSES), dtype=np.int64), samples), n_f),
        "font": np.repeat(np.arange(n_f, dtype=np.int64), per),
        "font_path": np.array([f.rel for f in used]),
        "font_sha256": np.array([f.sha256 for f in used]),
        "font_family": np.array(families),
        "font_group": groups,
    }


def load_arrays(data_root: str | None, font_dir: str | None, progress=None,
                packages: dict[str, tuple[str, ...]] | None = None) -> tuple[dict[str, np.ndarray], str]:
    """The cached arrays of the installed fonts (built and cached on first use), and the fonts' digest."""
    from ..store.fileio import atomic_write

    root = font_root(font_dir)
    fonts = list_fonts(root, packages)
    digest = fonts_digest(fonts)
    cache_dir = Path(data_root or os.environ.get("METAPRUNE_DATA", "data")) / "glyphs"
    cache = cache_dir / f"glyphs-{digest}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}, digest
        except (OSError, ValueError, KeyError, EOFError):
            pass  # a damaged cache is built again
    t0 = time.perf_counter()
    if progress is not None:
        progress(f"glyphs: rendering {len(fonts)} font files under {root} into {cache} (once)")
    arrays = build_arrays(root, fonts)
    cache_dir.mkdir(parents=True, exist_ok=True)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(cache, save)
    if progress is not None:
        progress(f"glyphs: {len(arrays['labels'])} images of {len(arrays['font_path'])} fonts in "
                 f"{time.perf_counter() - t0:.0f} s")
    return arrays, digest


def carve_groups(groups: np.ndarray, want_fonts: int, rng: np.random.Generator,
                 among: np.ndarray) -> np.ndarray:
    """Group ids drawn in a random order from ``among`` until they hold at least ``want_fonts`` fonts
    (``groups``: the group of each font)."""
    picked, count = [], 0
    for g in rng.permutation(np.asarray(among, dtype=np.int64)):
        if count >= want_fonts:
            break
        picked.append(int(g))
        count += int((groups == g).sum())
    return np.array(sorted(picked), dtype=np.int64)


def assign_splits(groups: np.ndarray, want_test: int, want_search: int, seed: int, test_seed: int) -> np.ndarray:
    """The split of each font (0 train, 1 search, 2 test), whole groups at a time: test groups drawn
    with ``test_seed`` until they hold ``want_test`` fonts, search groups with ``seed`` from the rest."""
    ids = np.unique(groups)
    test_g = carve_groups(groups, want_test, np.random.default_rng(test_seed), ids)
    search_g = carve_groups(groups, want_search, np.random.default_rng(seed), np.setdiff1d(ids, test_g))
    split_of_font = np.zeros(len(groups), dtype=np.int64)
    split_of_font[np.isin(groups, search_g)] = 1
    split_of_font[np.isin(groups, test_g)] = 2
    return split_of_font


def load_glyphs(root: str | None, font_dir: str | None, seed: int, search_per_class: int | None,
                test_per_class: int | None, test_seed: int, packages: dict[str, tuple[str, ...]] | None = None):
    """The ``glyphs`` splits: test fonts fixed by ``test_seed``, search fonts drawn with ``seed`` from
    the rest; ``*_per_class``: at least that many images of each class (whole fonts), default
    :data:`TEST_FRACTION` and :data:`SEARCH_FRACTION` of the fonts."""
    import torch

    from .splits import DataSplits, TensorSplit

    arrays, digest = load_arrays(root, font_dir, packages=packages)
    groups = arrays["font_group"]
    n_fonts = len(groups)

    def fonts_for(per_class: int | None, fraction: float) -> int:
        return int(np.ceil(fraction * n_fonts)) if per_class is None else -(-per_class // SAMPLES_PER_GLYPH)

    want_test, want_search = fonts_for(test_per_class, TEST_FRACTION), fonts_for(search_per_class, SEARCH_FRACTION)
    if min(want_test, want_search) < 1 or want_test + want_search > n_fonts // 2:
        raise UserError(f"data.test_per_class/search_per_class ask for {want_test} + {want_search} of the "
                        f"{n_fonts} glyphs fonts; accepted: together at most {n_fonts // 2} fonts "
                        f"({SAMPLES_PER_GLYPH * (n_fonts // 2)} images per class)")
    split_of_font = assign_splits(groups, want_test, want_search, seed, test_seed)
    where = split_of_font[arrays["font"]]
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(np.ascontiguousarray(arrays["images"]))
    labels = torch.from_numpy(arrays["labels"].astype(np.int64))

    def split(k: int, order: np.random.Generator | None) -> TensorSplit:
        idx = np.flatnonzero(where == k)
        if order is not None:
            idx = order.permutation(idx)
        t = torch.as_tensor(idx, dtype=torch.long)
        return TensorSplit(images[t], labels[t], *GLYPH_STATS, False)

    train, search = split(0, rng), split(1, rng)
    test = split(2, np.random.default_rng(test_seed))
    fonts = {"train": int((split_of_font == 0).sum()), "search": int((split_of_font == 1).sum()),
             "test": int((split_of_font == 2).sum())}
    info = {"train": len(train), "search": len(search), "test": len(test), "fonts": fonts}
    return DataSplits("glyphs", train, search, test, len(CLASSES), 1, SIZE, info, source=f"fonts:{digest}")
