import pickle

import numpy as np
import pytest
import torch

from metaprune import UserError
from metaprune.data import load_data


def _write_cifar(root, name, n_train=60, n_test=20, classes=10):
    rng = np.random.default_rng(0)
    sub, key, train_names, test_names = {
        "cifar10": ("cifar-10-batches-py", b"labels", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
        "cifar100": ("cifar-100-python", b"fine_labels", ["train"], ["test"]),
    }[name]
    folder = root / sub
    folder.mkdir(parents=True)
    for names, n in ((train_names, n_train), (test_names, n_test)):
        for fname in names:
            batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                     key: (np.arange(n) % classes).tolist()}
            with open(folder / fname, "wb") as f:
                pickle.dump(batch, f)
    return folder


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loader_reads_the_on_disk_format(tmp_path, name, classes):
    n_train = 300 if name == "cifar10" else 1000
    _write_cifar(tmp_path, name, n_train=n_train if name == "cifar100" else 60, classes=classes)
    d = load_data(name, root=str(tmp_path), seed=0, search_per_class=2)
    assert d.num_classes == classes and d.in_channels == 3 and d.image_size == 32
    assert d.info["search"] == 2 * classes
    assert d.info["train"] + d.info["search"] == (300 if name == "cifar10" else 1000)
    x, y = next(d.search.batches(8, augment=False))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload", ["evil", "truncated", "not_a_dict"])
def test_a_crafted_or_broken_cifar_batch_is_refused_without_running_code(tmp_path, payload):
    folder = _write_cifar(tmp_path, "cifar10")
    target = folder / "data_batch_3"
    if payload == "evil":
        with open(target, "wb") as f:
            pickle.dump({b"data": _Evil(tmp_path / "pwned"), b"labels": [0]}, f)
    elif payload == "truncated":
        target.write_bytes(target.read_bytes()[:300])
    else:
        with open(target, "wb") as f:
            pickle.dump([1, 2, 3], f)
    with pytest.raises(UserError, match="cifar10 under .* is unreadable: data_batch_3"):
        load_data("cifar10", root=str(tmp_path))
    assert not (tmp_path / "pwned").exists()


def test_missing_cifar_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="cifar10 is not under .*--download"):
        load_data("cifar10", root=str(tmp_path))


def _write_folder(root, classes, n_train, n_val, hw, ext):
    """An ImageNet-layout folder of random images: root/{train,val}/CLASS/i.EXT."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(root / split / c / f"{i}.{ext}")


def test_imagefolder_loader(tmp_path):
    _write_folder(tmp_path, ("cat", "dog"), 6, 2, (40, 48), "png")
    from torchvision.datasets import folder

    scans = []
    real = folder.make_dataset
    folder.make_dataset = lambda *a, **k: scans.append(a[0]) or real(*a, **k)
    try:
        d = load_data("imagefolder", root=str(tmp_path), seed=0, search_per_class=2, image_size=32)
        assert d.num_classes == 2 and d.info == {"train": 8, "search": 4, "test": 4}
        x, y = next(d.train.batches(4, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0)))
        assert x.shape == (4, 3, 32, 32) and set(y.tolist()) <= {0, 1}
        import dataclasses

        for split in (d.train, d.search, d.test):  # every split, twice: no rescans (issue 15)
            split = dataclasses.replace(split, workers=0)  # in-process decoding: the test is about scans
            for _ in range(2):
                assert sum(len(b[1]) for b in split.batches(3)) == len(split)
        sub = d.train.subset(np.array([0, 2, 5]))  # scratch training's image cap
        xs, ys = next(sub.batches(8))
        assert len(sub) == 3 and xs.shape == (3, 3, 32, 32)
        assert ys.tolist() == [d.train.samples[i][1] for i in d.train.indices[[0, 2, 5]]]
    finally:
        folder.make_dataset = real
    assert len(scans) == 2, scans  # train/ and val/, once each
    with pytest.raises(UserError, match="no val/ folder"):
        (tmp_path / "val").rename(tmp_path / "v")
        load_data("imagefolder", root=str(tmp_path))


def test_folder_passes_resume_without_decoding_and_reuse_their_workers(tmp_path):
    """Issue 15: a resumed epoch skips its first batches undecoded and continues with the same images
    and augmentations, whatever the number of DataLoader workers; the DataLoader and its persistent
    workers serve every later pass."""
    import dataclasses

    from metaprune.data import folder as folder_mod

    _write_folder(tmp_path, ("a", "b"), 9, 1, (20, 24), "jpg")
    d = load_data("imagefolder", root=str(tmp_path), seed=0, search_per_class=1, image_size=16, workers=0)
    assert d.train.workers == d.search.workers == d.test.workers == 0  # data.workers

    def one_pass(split, start=0):
        gen = torch.Generator().manual_seed(7)
        return [(x.clone(), y.clone()) for x, y in split.batches(4, shuffle=True, augment=True, generator=gen,
                                                                 drop_last=True, start=start)]

    inline = d.train
    full = one_pass(inline)
    assert len(full) == 4
    decoded = []
    real = folder_mod._Images.__getitem__
    folder_mod._Images.__getitem__ = lambda self, item: decoded.append(item) or real(self, item)
    try:
        tail = one_pass(inline, start=2)
    finally:
        folder_mod._Images.__getitem__ = real
    assert len(decoded) == 8  # only the two batches it yields were decoded
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[2:], tail))
    pooled = dataclasses.replace(d.train, workers=2)
    for _ in range(2):  # the same images on 2 persistent workers, pass after pass
        again = one_pass(pooled)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full, again))
    (loader, _), = pooled._loaders.values()
    assert loader.persistent_workers and loader._iterator is not None  # kept, with its workers
    import pickle

    assert pickle.loads(pickle.dumps(pooled))._loaders == {}  # Ray ships splits without their workers


def test_unknown_dataset():
    with pytest.raises(UserError, match="dataset 'svhn' is unknown"):
        load_data("svhn")
def test_splits_are_disjoint_stratified_and_shuffled():
    import numpy as np

    from metaprune.data import load_data

    d = load_data("mnist5k", seed=3)
    assert d.info == {"train": 3500, "search": 500, "test": 1000}
    for split, per_class in ((d.search, 50), (d.test, 100)):
        assert np.bincount(split.labels.numpy(), minlength=10).tolist() == [per_class] * 10
        # the source is sorted by class: a prefix of a split must still mix classes
        assert len(set(split.labels[:50].tolist())) >= 8
    flat = lambda s: {bytes(im.numpy().tobytes()) for im in s.images}  # noqa: E731
    assert not flat(d.search) & flat(d.test)
    assert load_data("mnist5k", seed=3).search.labels.tolist() == d.search.labels.tolist()
    assert load_data("mnist5k", seed=4).search.labels.tolist() != d.search.labels.tolist()
