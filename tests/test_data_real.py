"""Loaders of the real datasets, tested on tiny fixtures written in the exact on-disk formats (no network)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("torchvision")

from ballot_lib.data import DataConfig, DatasetError, get_dataset, stratified_split  # noqa: E402
from ballot_lib.data import real  # noqa: E402

import fixtures_real as fx  # noqa: E402


def load(root: Path, name: str, **kw):
    return get_dataset(DataConfig(name=name, root=str(root), verify=False, **kw))


def rows_to_chw(rows: np.ndarray) -> torch.Tensor:
    """CIFAR's N x 3072 rows as N x 3 x 32 x 32 (1024 red, 1024 green, 1024 blue, each row-major)."""
    return torch.from_numpy(rows.reshape(-1, 3, 32, 32))


def origin(x: torch.Tensor, rows: np.ndarray) -> list[int]:
    """For each image in ``x``, the index of the fixture row it came from."""
    index = {r.tobytes(): i for i, r in enumerate(rows_to_chw(rows).numpy())}
    return [index[img.numpy().tobytes()] for img in x]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return root, fx.write_cifar10(root), fx.write_cifar100(root)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return root, fx.write_tinyimagenet(root)


@pytest.fixture(scope="module")
def utk_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("utk")
    return root, fx.write_utkface(root)


# ---------------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_round_trip_and_val_carve(cifar_root):
    root, w, _ = cifar_root
    b = load(root, "cifar10")
    assert b.train.x.dtype == torch.uint8 and b.train.y.dtype == torch.int64
    assert b.input_shape == (3, 32, 32) and b.num_classes == 10 and b.class_names == fx.CIFAR10_NAMES
    assert b.mean == (0.4914, 0.4822, 0.4465) and b.augment and b.crop_padding == 4
    # Train and val partition the official train set, with the labels written for each image.
    src_train, src_val = origin(b.train.x, w["train_x"]), origin(b.val.x, w["train_x"])
    assert sorted(src_train + src_val) == list(range(len(w["train_y"])))
    assert b.train.y.tolist() == w["train_y"][src_train].tolist()
    assert b.val.y.tolist() == w["train_y"][src_val].tolist()
    # A given pixel: red channel, row 5, column 7 is byte 0 * 1024 + 5 * 32 + 7 of the row.
    assert int(b.train.x[0, 0, 5, 7]) == int(w["train_x"][src_train[0], 5 * 32 + 7])
    assert int(b.train.x[0, 2, 31, 0]) == int(w["train_x"][src_train[0], 2 * 1024 + 31 * 32])
    # The val carve: 10 % of each class's 10 images, as stratified_split gives with split_seed.
    assert b.val.class_counts(10).tolist() == [1] * 10 and b.train.class_counts(10).tolist() == [9] * 10
    _, carved = stratified_split(w["train_y"], 0.1, 0)
    assert sorted(src_val) == carved.tolist()
    # The official test batch, unchanged and in order.
    assert torch.equal(b.test.x, rows_to_chw(w["test_x"])) and b.test.y.tolist() == w["test_y"].tolist()
    assert b.train.g is None


def test_cifar10_split_seed_changes_val(cifar_root):
    root, w, _ = cifar_root
    a, b = load(root, "cifar10", split_seed=0), load(root, "cifar10", split_seed=1)
    assert origin(a.val.x, w["train_x"]) != origin(b.val.x, w["train_x"])
    assert torch.equal(a.val.x, load(root, "cifar10", split_seed=0).val.x)


def test_cifar100_fine_labels_and_names(cifar_root):
    root, _, w = cifar_root
    b = load(root, "cifar100")
    assert b.num_classes == 100 and b.class_names[7] == "fine_07"
    assert torch.equal(b.test.x, rows_to_chw(w["test_x"])) and b.test.y.tolist() == w["test_y"].tolist()
    src = origin(b.train.x, w["train_x"])
    assert b.train.y.tolist() == w["train_y"][src].tolist()
    assert b.val.class_counts(100).tolist() == [1] * 100 and len(b.train) == 200


def test_to_grayscale_matches_pil():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    gray = real.to_grayscale(torch.from_numpy(img).permute(2, 0, 1)[None])[0]
    pil = np.asarray(Image.fromarray(img).convert("L"))
    for c in range(3):
        assert gray[c].numpy().tolist() == pil.tolist()


@pytest.mark.parametrize("skew", [0.95, 0.8])
def test_cifar10s_skew_and_both_domain_test(cifar_root, skew):
    root, w, _ = cifar_root
    plain, b = load(root, "cifar10"), load(root, "cifar10s", skew=skew)
    assert b.group_names == ["color", "gray"] and b.group_attribute == "domain" and b.num_groups == 2
    assert torch.equal(b.train.y, plain.train.y)
    n_major = round(skew * 9)  # 9 train images per class after the val carve
    for c in range(10):
        g = b.train.g[b.train.y == c]
        major = 0 if c < 5 else 1
        assert int((g == major).sum()) == n_major and int((g != major).sum()) == 9 - n_major
    # Gray images are the luma of the colour image on three channels; colour images are untouched.
    gray = b.train.g == 1
    assert torch.equal(b.train.x[gray], real.to_grayscale(plain.train.x[gray]))
    assert torch.equal(b.train.x[~gray], plain.train.x[~gray])
    # Val and test: every image twice, colour (g = 0) then gray (g = 1).
    for split, ref in ((b.test, plain.test), (b.val, plain.val)):
        n = len(ref)
        assert len(split) == 2 * n and split.g.tolist() == [0] * n + [1] * n
        assert torch.equal(split.x[:n], ref.x) and torch.equal(split.x[n:], real.to_grayscale(ref.x))
        assert split.y.tolist() == ref.y.tolist() * 2


def test_cifar_md5_check_applies_when_verify(cifar_root):
    root, _, _ = cifar_root
    with pytest.raises(DatasetError, match="md5"):
        get_dataset(DataConfig(name="cifar10", root=str(root)))  # verify=True: fixtures are not the real files


def test_cifar_malformed_batch(tmp_path):
    fx.write_cifar10(tmp_path)
    fx._pickle(tmp_path / "cifar-10-batches-py" / "data_batch_2", {"data": np.zeros((4, 100), np.uint8),
                                                                    "labels": [0] * 4})
    with pytest.raises(DatasetError, match=r"data_batch_2 is an array of shape \(4, 100\)"):
        load(tmp_path, "cifar10")


@pytest.mark.parametrize("skew_classes", [(1, 3, 5, 7, 9), (9, 0)])
def test_cifar10s_class_split_is_a_parameter(cifar_root, skew_classes):
    root, _, _ = cifar_root
    default, b = load(root, "cifar10s"), load(root, "cifar10s", skew_classes=skew_classes)
    assert b.notes["skew_classes"] == sorted(skew_classes) and default.notes["skew_classes"] == [0, 1, 2, 3, 4]
    for c in range(10):
        g = b.train.g[b.train.y == c]
        major = 0 if c in skew_classes else 1
        assert int((g == major).sum()) == round(0.95 * 9), c  # 9 train images per class after the val carve
    gray = b.train.g == 1
    assert torch.equal(b.train.x[gray], real.to_grayscale(default.train.x[gray]))
    assert torch.equal(b.test.x, default.test.x)  # val/test hold both versions of every image either way


# ---------------------------------------------------------------------------------------------------- CelebA


def test_celeba_partition_and_target(tmp_path):
    w = fx.write_celeba(tmp_path)
    b = load(tmp_path, "celeba", image_size=32)
    male = fx.CELEBA_ATTRIBUTES.index("Male")
    assert (len(b.train), len(b.val), len(b.test)) == (8, 3, 4)
    assert b.class_names == ["not Male", "Male"] and b.num_classes == 2 and b.group_names is None
    assert b.train.g is None and b.input_shape == (3, 32, 32)
    for split, code in (("train", 0), ("val", 1), ("test", 2)):
        rows = np.flatnonzero(w["partition"] == code)
        assert getattr(b, split).y.tolist() == (w["attr"][rows, male] == 1).astype(int).tolist()
    # Target Smiling defaults to g = Male; an explicit sensitive attribute is honoured.
    s = load(tmp_path, "celeba", image_size=32, target="Smiling")
    smiling = fx.CELEBA_ATTRIBUTES.index("Smiling")
    test_rows = np.flatnonzero(w["partition"] == 2)
    assert s.class_names == ["not Smiling", "Smiling"] and s.group_attribute == "Male"
    assert s.group_names == ["not Male", "Male"]
    assert s.test.y.tolist() == (w["attr"][test_rows, smiling] == 1).astype(int).tolist()
    assert s.test.g.tolist() == (w["attr"][test_rows, male] == 1).astype(int).tolist()
    t = load(tmp_path, "celeba", image_size=32, target="Blond_Hair", sensitive="Young")
    young = fx.CELEBA_ATTRIBUTES.index("Young")
    assert t.val.g.tolist() == (w["attr"][w["partition"] == 1, young] == 1).astype(int).tolist()
    with pytest.raises(ValueError, match="Smiling"):  # the message lists the valid attribute names
        load(tmp_path, "celeba", target="Smile")


def test_celeba_text_files_as_released_crlf_double_spaces_trailing_blank_line(tmp_path):
    # The real files separate values by one or two spaces, the attribute header ends with a space, and copies
    # made on Windows have CRLF endings; an empty line at the very end of a file is harmless.
    w = fx.write_celeba(tmp_path)
    for name in real.CELEBA_FILES:
        path = tmp_path / "celeba" / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n") + b"\r\n")
    attr = (tmp_path / "celeba" / "list_attr_celeba.txt").read_bytes()
    assert b" Young \r\n" in attr and b"  1" in attr and attr.endswith(b"\r\n\r\n")  # the cases above
    b = load(tmp_path, "celeba", image_size=16, target="Smiling")
    smiling, male = fx.CELEBA_ATTRIBUTES.index("Smiling"), fx.CELEBA_ATTRIBUTES.index("Male")
    for split, code in (("train", 0), ("val", 1), ("test", 2)):
        rows = np.flatnonzero(w["partition"] == code)
        assert getattr(b, split).y.tolist() == (w["attr"][rows, smiling] == 1).astype(int).tolist()
        assert getattr(b, split).g.tolist() == (w["attr"][rows, male] == 1).astype(int).tolist()


def test_celeba_center_crop_and_resize(tmp_path):
    fx.write_celeba(tmp_path)
    b = load(tmp_path, "celeba")
    assert b.input_shape == (3, 128, 128) and b.train.x.dtype == torch.uint8
    # The red bands above and below the central 178x178 square are cropped away: away from the edges (where JPEG
    # chroma subsampling and the antialiased resize blend in the band) every pixel has the colour of the square.
    for i in range(8):
        want = torch.tensor(fx.celeba_colour(i), dtype=torch.int32).view(3, 1, 1)
        assert (b.train.x[i, :, 8:-8].to(torch.int32) - want).abs().max() <= 4
    # Exactly torchvision's CenterCrop(178) then Resize(128) on the decoded JPEG.
    from torchvision import transforms as T

    with Image.open(tmp_path / "celeba" / "img_align_celeba" / "000002.jpg") as im:
        ref = T.Compose([T.CenterCrop(178), T.Resize(128), T.PILToTensor()])(im.convert("RGB"))
    assert torch.equal(b.train.x[1], ref)


def test_celeba_cache_reused(tmp_path, monkeypatch):
    fx.write_celeba(tmp_path)
    first = load(tmp_path, "celeba", image_size=32)
    cache = tmp_path / "celeba" / "_ballot_cache"
    assert sorted(p.name for p in cache.iterdir()) == ["test_32px.pt", "train_32px.pt", "val_32px.pt"]

    def no_decoding(*args, **kwargs):
        raise AssertionError("images decoded although the cache is valid")

    monkeypatch.setattr(real, "_decode_images", no_decoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = load(tmp_path, "celeba", image_size=32, target="Smiling")
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test.x, second.test.x)


def test_celeba_corrupt_cache_rebuilt(tmp_path):
    fx.write_celeba(tmp_path)
    first = load(tmp_path, "celeba", image_size=32)
    path = tmp_path / "celeba" / "_ballot_cache" / "train_32px.pt"
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="rebuilding"):
        again = load(tmp_path, "celeba", image_size=32)
    assert torch.equal(first.train.x, again.train.x)
    assert torch.equal(torch.load(path, weights_only=True)["x"], first.train.x)
    assert not list(path.parent.glob("*.tmp"))


def test_celeba_stale_cache_rebuilt(tmp_path):
    fx.write_celeba(tmp_path)
    load(tmp_path, "celeba", image_size=32)
    path = tmp_path / "celeba" / "_ballot_cache" / "val_32px.pt"
    obj = torch.load(path, weights_only=True)
    obj["filenames"][0] = "999999.jpg"
    torch.save(obj, path)
    with pytest.warns(UserWarning, match="does not match"):
        load(tmp_path, "celeba", image_size=32)


def test_celeba_md5_check_applies_when_verify(tmp_path):
    fx.write_celeba(tmp_path)
    with pytest.raises(DatasetError, match="md5"):
        get_dataset(DataConfig(name="celeba", root=str(tmp_path)))


# ---------------------------------------------------------------------------------------------------- UTKFace


def test_utkface_labels_skips_and_splits(utk_root):
    root, w = utk_root
    with pytest.warns(UserWarning, match="skipped 2 files"):
        b = load(root, "utkface")
    assert b.notes["skipped_files"] == 2 and sorted(b.notes["skipped_examples"]) == sorted(w["malformed"])
    assert b.class_names == ["male", "female"] and b.group_attribute == "race" and len(b.group_names) == 5
    assert len(b.train) + len(b.val) + len(b.test) == len(w["labels"]) == 40  # the plain .jpg files count
    assert b.input_shape == (3, 64, 64) and b.train.x.dtype == torch.uint8
    # Test = 20 % of each (gender, race) cell of 4 images, val = 10 % of the rest (at least one).
    assert (len(b.test), len(b.val), len(b.train)) == (10, 10, 20)
    cells = sorted(zip(b.test.y.tolist(), b.test.g.tolist()))
    assert cells == [(gd, r) for gd in (0, 1) for r in range(5)]
    # Every image has the colour encoding its labels: labels and pixels stay together.
    for split in (b.train, b.val, b.test):
        for img, gender, race in zip(split.x, split.y.tolist(), split.g.tolist()):
            age = int((img[0].float().mean() / 3).round())
            assert (age, gender, race) in w["labels"]


def test_utkface_target_choices(utk_root):
    root, w = utk_root
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = load(root, "utkface", target="age_bin", sensitive="gender", image_size=16)
        r = load(root, "utkface", target="race", image_size=16)
    assert b.class_names == ["0-19", "20-39", "40-59", "60+"] and b.group_names == ["male", "female"]
    ages = sorted(a for a, _, _ in w["labels"])
    expected = np.bincount(np.searchsorted([20, 40, 60], ages, "right"), minlength=4)
    counts = sum(s.class_counts(4) for s in (b.train, b.val, b.test))
    assert counts.tolist() == expected.tolist() and b.input_shape == (3, 16, 16)
    assert r.num_classes == 5 and r.group_attribute == "gender"
    with pytest.raises(ValueError, match="gender, race, age_bin"):
        load(root, "utkface", target="ethnicity")
    with pytest.raises(ValueError, match="valid choices"):
        load(root, "utkface", sensitive="smile")


def test_parse_utkface_name():
    assert real.parse_utkface_name("25_1_2_20170116174525125.jpg.chip.jpg") == {
        "age": 25, "gender": 1, "race": 2, "age_bin": 1}
    assert real.parse_utkface_name("61_0_4_20170109.jpg")["age_bin"] == 3
    for bad in ("39_1_20170116174525125.jpg.chip.jpg", "a_1_2_2017.jpg", "25_2_1_2017.jpg", "25_0_7_2017.jpg"):
        assert real.parse_utkface_name(bad) is None


# ---------------------------------------------------------------------------------------------------- Tiny-ImageNet


def test_tinyimagenet_val_as_test(tiny_root):
    root, w = tiny_root
    b = load(root, "tinyimagenet")
    wnids = sorted(fx.TINY_WNIDS)
    assert b.notes["wnids"] == wnids and b.num_classes == 3
    assert b.class_names == [fx.TINY_WORDS[x].split(",")[0] for x in wnids]  # goldfish, Egyptian cat, reel
    assert b.input_shape == (3, 64, 64) and b.augment and b.crop_padding == 8
    assert b.test.y.tolist() == [wnids.index(wn) for _, wn in w["val"]]
    k = 4  # val_4.JPEG: class TINY_WNIDS[1], colour tiny_colour(1, 24)
    want = torch.tensor(fx.tiny_colour(k % 3, 20 + k), dtype=torch.int32).view(3, 1, 1)
    assert (b.test.x[k].to(torch.int32) - want).abs().max() <= 4
    assert (b.train.class_counts(3) + b.val.class_counts(3)).tolist() == [10, 10, 10]
    assert b.val.class_counts(3).tolist() == [1, 1, 1]


def test_tinyimagenet_grayscale_becomes_rgb(tiny_root):
    root, _ = tiny_root
    b = load(root, "tinyimagenet")
    x = torch.cat([b.train.x, b.val.x])
    gray = x[(x[:, 0] == x[:, 1]).all(dim=(1, 2)) & (x[:, 1] == x[:, 2]).all(dim=(1, 2))]
    assert len(gray) == 1 and int(gray[0, 0, 0, 0]) == 77


# ---------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, folder, file",
    [
        ("cifar10", "cifar-10-batches-py", "data_batch_1"),
        ("cifar10s", "cifar-10-batches-py", "batches.meta"),
        ("cifar100", "cifar-100-python", "meta"),
        ("celeba", "celeba", "list_attr_celeba.txt"),
        ("utkface", "UTKFace", "UTKFace"),
        ("tinyimagenet", "tiny-imagenet-200", "wnids.txt"),
    ],
)
def test_missing_root_names_files_and_folder(tmp_path, name, folder, file):
    with pytest.raises(DatasetError) as err:
        load(tmp_path / "nowhere", name)
    msg = str(err.value)
    assert file in msg and str(tmp_path / "nowhere") in msg and folder in msg and "http" in msg


@pytest.mark.parametrize(
    "writer, name, rel",
    [
        (fx.write_cifar10, "cifar10", "cifar-10-batches-py/data_batch_3"),
        (fx.write_cifar100, "cifar100", "cifar-100-python/test"),
        (fx.write_celeba, "celeba", "celeba/list_eval_partition.txt"),
        (fx.write_tinyimagenet, "tinyimagenet", "tiny-imagenet-200/val/val_annotations.txt"),
    ],
)
def test_missing_file_names_it(tmp_path, writer, name, rel):
    writer(tmp_path)
    (tmp_path / rel).unlink()
    with pytest.raises(DatasetError) as err:
        load(tmp_path, name)
    msg = str(err.value)
    assert Path(rel).name in msg and str(tmp_path / Path(rel).parts[0]) in msg


def test_celeba_missing_image_and_utkface_empty(tmp_path):
    fx.write_celeba(tmp_path)
    (tmp_path / "celeba" / "img_align_celeba" / "000010.jpg").unlink()
    with pytest.raises(DatasetError, match="000010.jpg"):
        load(tmp_path, "celeba", image_size=16)
    (tmp_path / "UTKFace").mkdir()
    with pytest.raises(DatasetError, match="UTKFace"):
        load(tmp_path, "utkface")
