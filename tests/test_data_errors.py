"""Bad data and bad data options fail at load/validate time with one clear DatasetError/ParameterError line.

Every case writes a tiny fixture in the exact on-disk format (``tests/fixtures_real.py``), breaks one thing the
way a real download or a typo does, and checks that the message names the file/parameter and what is expected.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")

from ballot_lib.checks import ParameterError  # noqa: E402
from ballot_lib.data import DataBundle, DataConfig, DatasetError, Split, get_dataset  # noqa: E402
from ballot_lib.data import core, real  # noqa: E402
from ballot_lib.experiment import Experiment  # noqa: E402
from ballot_lib.models import ModelConfig  # noqa: E402
from ballot_lib.training import TrainConfig  # noqa: E402

import fixtures_real as fx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load(root: Path, name: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UTKFace warns about the fixture's malformed names
        return get_dataset(DataConfig(name=name, root=str(root), verify=False, **kw))


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


# ------------------------------------------------------------------------------------------ 1. empty splits


def _utkface_with(root: Path, n: int) -> None:
    """A UTKFace folder holding only the first ``n`` well-named fixture files."""
    fx.write_utkface(root)
    folder = root / "UTKFace"
    good = sorted(p for p in folder.iterdir() if real.parse_utkface_name(p.name) is not None)
    for p in list(folder.iterdir()):
        if p not in good[:n]:
            p.unlink()


def test_utkface_with_three_files_fails_at_load_naming_the_empty_split(tmp_path):
    _utkface_with(tmp_path, 3)
    with pytest.raises(DatasetError) as err:
        load(tmp_path, "utkface")
    msg = one_line(err)
    assert "utkface" in msg and "val split is empty" in msg and "UTKFace" in msg
    assert re.search(r"train/val/test = [12]/0/[12] samples", msg)  # 3 files: one cell each, nothing to carve


def test_empty_split_fails_before_the_experiment_writes_anything(tmp_path):
    _utkface_with(tmp_path / "data", 3)
    results = tmp_path / "results"
    exp = Experiment(DataConfig("utkface", root=str(tmp_path / "data"), verify=False, image_size=16),
                     ModelConfig("mlp", width=8), TrainConfig(epochs=1), device="cpu", results_dir=str(results),
                     progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DatasetError, match="val split is empty"):
            exp.dense(0)
    assert [f for f in files_under(results) if not f.endswith(".lock")] in ([], ["runs"])


def test_tinyimagenet_empty_val_annotations(tmp_path):
    fx.write_tinyimagenet(tmp_path)
    (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").write_text("")
    with pytest.raises(DatasetError) as err:
        load(tmp_path, "tinyimagenet")
    msg = one_line(err)
    assert "val_annotations.txt" in msg and "no image" in msg


@pytest.mark.parametrize("empty", ["train", "val", "test"])
def test_finalize_rejects_any_empty_split(empty):
    def split(n: int) -> Split:
        return Split(torch.zeros(n, 2), torch.zeros(n, dtype=torch.long))

    sizes = {"train": 4, "val": 2, "test": 3, empty: 0}
    bundle = DataBundle(name="toy", **{k: split(v) for k, v in sizes.items()}, num_classes=10,
                        class_names=list("abcdefghij"),
                        notes={"source": "/data/toy"})
    with pytest.raises(DatasetError) as err:
        core.finalize(bundle, DataConfig("digits"))
    msg = one_line(err)
    counts = "/".join(str(sizes[k]) for k in ("train", "val", "test"))
    assert f"toy: the {empty} split is empty" in msg and counts in msg and "/data/toy" in msg


# ------------------------------------------------------------------------------------------ 2. unreadable files


def test_utkface_path_is_a_file(tmp_path):
    (tmp_path / "UTKFace").write_text("not a folder")
    with pytest.raises(DatasetError) as err:
        load(tmp_path, "utkface")
    msg = one_line(err)
    assert str(tmp_path / "UTKFace") in msg and "folder" in msg


@pytest.mark.parametrize("rel", ["wnids.txt", "words.txt", "val/val_annotations.txt"])
def test_tinyimagenet_text_file_not_utf8(tmp_path, rel):
    fx.write_tinyimagenet(tmp_path)
    path = tmp_path / "tiny-imagenet-200" / rel
    path.write_bytes(b"\xff\xfe\x80 not text\n")
    with pytest.raises(DatasetError) as err:
        load(tmp_path, "tinyimagenet")
    msg = one_line(err)
    assert str(path) in msg and "UTF-8" in msg


@pytest.mark.parametrize("rel", ["wnids.txt", "words.txt", "val/val_annotations.txt"])
def test_tinyimagenet_text_file_is_a_folder(tmp_path, rel):
    fx.write_tinyimagenet(tmp_path)
    path = tmp_path / "tiny-imagenet-200" / rel
    path.unlink()
    path.mkdir()
    with pytest.raises(DatasetError) as err:
        load(tmp_path, "tinyimagenet")
    msg = one_line(err)
    assert Path(rel).name in msg and "is a folder" in msg and "expected a file" in msg


@pytest.mark.parametrize(
    "writer, name, rel",
    [
        (fx.write_cifar10, "cifar10", "cifar-10-batches-py/data_batch_1"),
        (fx.write_cifar10, "cifar10", "cifar-10-batches-py/batches.meta"),
        (fx.write_cifar100, "cifar100", "cifar-100-python/train"),
        (fx.write_celeba, "celeba", "celeba/list_attr_celeba.txt"),
    ],
)
def test_data_file_is_a_folder(tmp_path, writer, name, rel):
    writer(tmp_path)
    path = tmp_path / rel
    path.unlink()
    path.mkdir()
    with pytest.raises(DatasetError) as err:
        load(tmp_path, name)
    msg = one_line(err)
    assert path.name in msg and str(path.parent) in msg and "is a folder" in msg and "expected a file" in msg


def test_celeba_image_folder_is_a_file(tmp_path):
    fx.write_celeba(tmp_path)
    folder = tmp_path / "celeba" / "img_align_celeba"
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    folder.write_text("")
    with pytest.raises(DatasetError) as err:
        load(tmp_path, "celeba", image_size=16)
    assert "img_align_celeba" in one_line(err) and "expected a folder" in str(err.value)


def test_celeba_partition_not_utf8(tmp_path):
    fx.write_celeba(tmp_path)
    path = tmp_path / "celeba" / "list_eval_partition.txt"
    path.write_bytes(b"\xff\xfe\x80\n")
    with pytest.raises(DatasetError) as err:
        load(tmp_path, "celeba", image_size=16)
    assert "list_eval_partition.txt" in one_line(err) or "CelebA" in str(err.value)


# ------------------------------------------------------------------------------------------ 3. validation


def test_celeba_unknown_sensitive_rejected_at_validate():
    with pytest.raises(ParameterError) as err:
        DataConfig("celeba", sensitive="Nose").validate()
    msg = one_line(err)
    assert "sensitive" in msg and "'Nose'" in msg and "Big_Nose" in msg and "none" in msg
    with pytest.raises(ParameterError, match="Smiling"):
        DataConfig("celeba", target="Smile").validate()
    with pytest.raises(ParameterError, match="valid choices"):
        DataConfig("celeba", target="none").validate()  # "none" switches groups off, it is no target


def test_celeba_attribute_names_match_the_official_header():
    assert core.CELEBA_ATTRIBUTES == tuple(fx.CELEBA_ATTRIBUTES)


@pytest.mark.parametrize(
    "name, target, sensitive, same",
    [
        ("utkface", "race", "race", "race"),
        ("utkface", None, "gender", "gender"),  # the default target is gender
        ("utkface", "age_bin", "age_bin", "age_bin"),
        ("celeba", "Smiling", "Smiling", "Smiling"),
        ("celeba", None, "Male", "Male"),  # the default target is Male
    ],
)
def test_target_equal_to_sensitive_rejected_at_validate(name, target, sensitive, same):
    with pytest.raises(ParameterError) as err:
        DataConfig(name, target=target, sensitive=sensitive).validate()
    msg = one_line(err)
    assert "sensitive" in msg and "target" in msg and repr(same) in msg and "none" in msg


@pytest.mark.parametrize(
    "name, target, sensitive",
    [("utkface", "race", None), ("utkface", "race", "none"), ("utkface", "age_bin", "race"),
     ("celeba", None, None), ("celeba", "Smiling", None), ("celeba", "Smiling", "Young"), ("celeba", "Male", "none")],
)
def test_valid_target_sensitive_pairs_pass(name, target, sensitive):
    DataConfig(name, target=target, sensitive=sensitive).validate()


def test_resolved_attributes_match_the_loaders(tmp_path):
    fx.write_utkface(tmp_path)
    for target, sensitive in ((None, None), ("race", None), ("age_bin", "none")):
        b = load(tmp_path, "utkface", target=target, sensitive=sensitive, image_size=8)
        cfg = DataConfig("utkface", target=target, sensitive=sensitive)
        assert core.resolved_attributes(cfg) == (b.notes["target"], b.notes["sensitive"])


@pytest.mark.parametrize("size", [100000, 257, 7, 0, -5])
def test_image_size_out_of_range(size):
    with pytest.raises(ParameterError) as err:
        DataConfig("celeba", image_size=size).validate()
    msg = one_line(err)
    assert "image_size" in msg and f"[{core.IMAGE_SIZE_MIN}, {core.IMAGE_SIZE_MAX}]" in msg and repr(size) in msg


def test_image_size_bound_admits_every_params_file_and_default():
    sizes = {16, 32, 64, 128, 178, 200, 224, 256}  # tests, the defaults, the native 178/200 px, ImageNet's 224
    for path in sorted((REPO / "params").glob("*.yaml")):
        sizes |= {int(v) for v in re.findall(r"^\s*image_size:\s*(\d+)\s*(?:#.*)?$", path.read_text(), re.M)}
    for size in sizes:
        DataConfig("celeba", image_size=size).validate()
        DataConfig("utkface", image_size=size).validate()


# ------------------------------------------------------------------------------------------ 4. malformed files


def _repickle(path: Path, **changes) -> None:
    """Rewrite the CIFAR pickle at ``path`` with some keys changed (value None: key removed)."""
    import pickle

    with open(path, "rb") as f:
        obj = pickle.load(f, encoding="latin1")
    for key, value in changes.items():
        if value is None:
            obj.pop(key)
        else:
            obj[key] = value
    fx._pickle(path, obj)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "writer, name, rel, breaks, wants",
    [
        (fx.write_cifar10, "cifar10", "cifar-10-batches-py/data_batch_2", _truncate, ["not a readable pickle"]),
        (fx.write_cifar10, "cifar10", "cifar-10-batches-py/batches.meta", _truncate,
         ["not a readable pickle", "'label_names'"]),
        (fx.write_cifar10, "cifar10", "cifar-10-batches-py/data_batch_4",
         lambda p: _repickle(p, labels=None, label=[0] * 20), ["no key 'labels'", "keys found", "'label'"]),
        (fx.write_cifar10, "cifar10", "cifar-10-batches-py/data_batch_4",
         lambda p: _repickle(p, data=np.zeros((20, 3000), np.uint8)), ["shape (20, 3000)", "3072"]),
        (fx.write_cifar10, "cifar10", "cifar-10-batches-py/test_batch",
         lambda p: _repickle(p, data=np.zeros((30, 3072), np.float32)), ["dtype float32", "uint8"]),
        (fx.write_cifar10, "cifar10", "cifar-10-batches-py/data_batch_1",
         lambda p: _repickle(p, labels=[0] * 19), ["holds 20 images but 19 labels"]),
        (fx.write_cifar10, "cifar10", "cifar-10-batches-py/data_batch_5",
         lambda p: _repickle(p, labels=[10] * 20), ["outside [0, 10)", "10..10"]),
        (fx.write_cifar100, "cifar100", "cifar-100-python/train",
         lambda p: _repickle(p, fine_labels=None), ["no key 'fine_labels'"]),
        (fx.write_cifar100, "cifar100", "cifar-100-python/meta",
         lambda p: _repickle(p, fine_label_names=["a", "b"]), ["'fine_label_names'", "2 entries", "100 class names"]),
        (fx.write_cifar10, "cifar10", "cifar-10-batches-py/test_batch", lambda p: p.write_bytes(b"not a pickle"),
         ["not a readable pickle"]),
    ],
    ids=["truncated-batch", "truncated-meta", "no-labels", "3000-wide", "float-data", "label-count",
         "label-range", "cifar100-no-fine-labels", "cifar100-meta-names", "garbage"],
)
def test_malformed_cifar_file_is_named_with_what_was_expected(tmp_path, writer, name, rel, breaks, wants):
    writer(tmp_path)
    breaks(tmp_path / rel)
    with pytest.raises(DatasetError) as err:
        load(tmp_path, name)
    msg = one_line(err)
    assert str(tmp_path / rel) in msg  # the file itself, not only its folder
    assert "expected a pickled dict with" in msg
    assert (real.CIFAR100_SOURCE if name == "cifar100" else real.CIFAR10_SOURCE) in msg
    for want in wants:
        assert want in msg, want


def _edit_line(path: Path, number: int, edit) -> None:
    """Replace line ``number`` (1-based) of a text file by ``edit(line)``."""
    lines = path.read_text().split("\n")
    lines[number - 1] = edit(lines[number - 1])
    path.write_text("\n".join(lines))


@pytest.mark.parametrize(
    "file, number, edit, wants",
    [
        ("list_attr_celeba.txt", 5, lambda line: line.rsplit(" ", 1)[0],
         ["39 values after the file name '000003.jpg', expected 40"]),
        ("list_attr_celeba.txt", 4, lambda line: line[:-2] + " 0", ["value '0' for 000002.jpg is not -1 or 1"]),
        ("list_attr_celeba.txt", 1, lambda line: "twelve", ["'twelve' is not the image count"]),
        ("list_attr_celeba.txt", 1, lambda line: "14", ["the image count 14 differs from the 15 image lines"]),
        ("list_attr_celeba.txt", 2, lambda line: line.rsplit(" ", 2)[0], ["the header has 39 names, expected 40"]),
        ("list_bbox_celeba.txt", 4, lambda line: line + " 5", ["5 values after the file name '000002.jpg'"]),
        ("list_landmarks_align_celeba.txt", 3, lambda line: line.replace("69", "6x9"), ["'6x9'", "an integer"]),
        ("identity_CelebA.txt", 4, lambda line: "", ["an empty line"]),
        ("list_eval_partition.txt", 3, lambda line: line[:-1] + "7", ["value '7' for 000003.jpg is not 0, 1 or 2"]),
    ],
    ids=["attr-39-values", "attr-value-0", "attr-count-line", "attr-count-wrong", "attr-header", "bbox-extra",
         "landmarks-not-int", "identity-blank-line", "partition-code"],
)
def test_malformed_celeba_text_file_names_file_and_line(tmp_path, file, number, edit, wants):
    fx.write_celeba(tmp_path)
    path = tmp_path / "celeba" / file
    _edit_line(path, number, edit)
    with pytest.raises(DatasetError) as err:
        load(tmp_path, "celeba", image_size=16)
    msg = one_line(err)
    line = 1 if "count" in wants[0] else number
    assert f"malformed {path}, line {line}:" in msg
    assert real.CELEBA_TABLES[file].layout in msg and real.CELEBA_SOURCE in msg
    for want in wants:
        assert want in msg, want
    assert not (tmp_path / "celeba" / "_ballot_cache").exists()  # nothing decoded, nothing written


@pytest.mark.parametrize("change", ["swap", "rename"])
def test_celeba_attribute_rows_must_name_the_partition_files(tmp_path, change):
    fx.write_celeba(tmp_path)
    path = tmp_path / "celeba" / "list_attr_celeba.txt"
    lines = path.read_text().split("\n")
    if change == "swap":  # lines 3 and 4 describe 000001.jpg and 000002.jpg: exchange them
        lines[2], lines[3] = lines[3], lines[2]
        bad, attr_name, part_name = 1, "000002.jpg", "000001.jpg"
    else:
        lines[6] = lines[6].replace("000005.jpg", "999999.jpg")
        bad, attr_name, part_name = 5, "999999.jpg", "000005.jpg"
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetError) as err:
        load(tmp_path, "celeba", image_size=16)
    msg = one_line(err)
    partition = tmp_path / "celeba" / "list_eval_partition.txt"
    assert f"{partition} line {bad} names '{part_name}'" in msg
    assert f"{path} line {bad + 2} names '{attr_name}'" in msg
    assert "same images in the same order" in msg and real.CELEBA_SOURCE in msg


def test_celeba_annotation_file_with_fewer_images(tmp_path):
    fx.write_celeba(tmp_path)
    path = tmp_path / "celeba" / "identity_CelebA.txt"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(DatasetError) as err:
        load(tmp_path, "celeba", image_size=16)
    assert f"{path} lists 14 images but" in one_line(err) and "list_attr_celeba.txt lists 15" in str(err.value)


def test_missing_utkface_folder_hint_names_utkface(tmp_path):
    with pytest.raises(DatasetError) as err:
        load(tmp_path / "data", "utkface")
    msg = one_line(err)
    assert "the folder that contains UTKFace/" in msg and "contains data/" not in msg


@pytest.mark.parametrize(
    "writer, name, file",
    [(fx.write_cifar10, "cifar10", "cifar-10-batches-py/batches.meta"),
     (fx.write_cifar100, "cifar100", "cifar-100-python/meta"),
     (fx.write_celeba, "celeba", "celeba/list_attr_celeba.txt")],
)
def test_md5_mismatch_message_is_ours(tmp_path, writer, name, file):
    writer(tmp_path)
    with pytest.raises(DatasetError) as err:
        get_dataset(DataConfig(name=name, root=str(tmp_path)))  # verify=True: fixtures are not the real files
    msg = one_line(err)
    assert f"{tmp_path / file} is not the official file (md5 mismatch" in msg
    assert "download=True" not in msg and "DataConfig(verify=False)" in msg and "skips the checksums" in msg
    assert "Obtain the dataset from" in msg and "https://" in msg


def test_cifar_md5_checked_on_every_file(tmp_path):
    import hashlib

    fx.write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    # Official sums for every file but data_batch_3: the error must name that one.
    official = dict(real.CIFAR10_FORMAT.train + real.CIFAR10_FORMAT.test + (real.CIFAR10_FORMAT.meta,))
    sums = {f: hashlib.md5((folder / f).read_bytes()).hexdigest() for f in official}
    fmt = real.CifarFormat(**{**real.CIFAR10_FORMAT.__dict__,
                              "train": tuple((f, sums[f] if f != "data_batch_3" else m)
                                             for f, m in real.CIFAR10_FORMAT.train),
                              "test": tuple((f, sums[f]) for f, _ in real.CIFAR10_FORMAT.test),
                              "meta": ("batches.meta", sums["batches.meta"])})
    with pytest.raises(DatasetError, match="data_batch_3 is not the official file"):
        real._cifar_split(folder, fmt.train, fmt, verify=True)
    assert len(real._cifar_split(folder, fmt.test, fmt, verify=True)) == 30
