"""Tiny, format-faithful copies of the real datasets, written into a folder for the loader tests.

Each ``write_*`` function writes files in the exact on-disk layout and format of the official release (see the
Appendix of SPEC.md and :mod:`ballot_lib.data.real`) and returns what it wrote, so that tests can check that
every value read back is the value written. The files are not the official ones, so the md5 checks
(``DataConfig(verify=True)``, the official sums that torchvision lists) fail on them: load them with
``DataConfig(verify=False)``.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TINY_WNIDS = ["n02124075", "n01443537", "n04067472"]  # deliberately not sorted, as in the real wnids.txt
TINY_WORDS = {"n01443537": "goldfish, Carassius auratus", "n02124075": "Egyptian cat", "n04067472": "reel"}


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random images in CIFAR's row format: N x 3072 uint8 (1024 red, 1024 green, 1024 blue, row-major)."""
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_class_train: int = 10, per_class_test: int = 3, seed: int = 0) -> dict:
    """Write ``<root>/cifar-10-batches-py/`` (five data batches, test_batch, batches.meta).

    Returns ``{"train_x", "train_y", "test_x", "test_y", "names"}`` with ``*_x`` in the N x 3072 row format.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_y = rng.permutation(np.repeat(np.arange(10), per_class_train))
    test_y = rng.permutation(np.repeat(np.arange(10), per_class_test))
    train_x, test_x = _cifar_images(rng, len(train_y)), _cifar_images(rng, len(test_y))
    for b, idx in enumerate(np.array_split(np.arange(len(train_y)), 5), start=1):
        _pickle(folder / f"data_batch_{b}", {
            "batch_label": f"training batch {b} of 5", "labels": train_y[idx].tolist(), "data": train_x[idx],
            "filenames": [f"img_{i}.png" for i in idx],
        })
    _pickle(folder / "test_batch", {
        "batch_label": "testing batch 1 of 1", "labels": test_y.tolist(), "data": test_x,
        "filenames": [f"test_{i}.png" for i in range(len(test_y))],
    })
    _pickle(folder / "batches.meta", {"num_cases_per_batch": len(train_y) // 5, "label_names": CIFAR10_NAMES,
                                      "num_vis": 3072})
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "names": CIFAR10_NAMES}


def write_cifar100(root: Path, per_class_train: int = 3, per_class_test: int = 1, seed: int = 0) -> dict:
    """Write ``<root>/cifar-100-python/`` (train, test, meta with fine and coarse label names)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    fine_names = [f"fine_{i:02d}" for i in range(100)]
    out = {"names": fine_names}
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        fine = rng.permutation(np.repeat(np.arange(100), per_class))
        x = _cifar_images(rng, len(fine))
        _pickle(folder / split, {
            "filenames": [f"{split}_{i}.png" for i in range(len(fine))], "batch_label": f"{split} batch",
            "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(), "data": x,
        })
        out[f"{split}_x"], out[f"{split}_y"] = x, fine
    _pickle(folder / "meta", {"fine_label_names": fine_names,
                              "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)]})
    return out


def _celeba_image(i: int) -> Image.Image:
    """A 178x218 image: a 20-row red band at top and bottom (removed by the centre crop), a solid colour inside."""
    arr = np.zeros((218, 178, 3), dtype=np.uint8)
    arr[:, :] = (255, 0, 0)
    arr[20:198] = celeba_colour(i)
    return Image.fromarray(arr)


def celeba_colour(i: int) -> tuple[int, int, int]:
    """The colour of the central 178x178 square of fixture image ``i`` (0-based)."""
    return (16 * (i % 8) + 8, 200 - 10 * i, 40 + 12 * i)


def write_celeba(root: Path, partition: tuple[int, ...] = (0,) * 8 + (1,) * 3 + (2,) * 4, seed: int = 0) -> dict:
    """Write ``<root>/celeba/``: ``img_align_celeba/*.jpg`` (178x218) and the five annotation text files.

    Returns ``{"filenames", "partition", "attr"}`` with ``attr`` the written {-1, 1} table ``[N, 40]``.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    n = len(partition)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    attr = rng.choice([-1, 1], size=(n, 40))
    for i, name in enumerate(names):
        _celeba_image(i).save(folder / "img_align_celeba" / name, quality=95)
    rows = "".join(f"{name} " + " ".join(f"{v:2d}" for v in row) + "\n" for name, row in zip(names, attr))
    (folder / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + rows)
    (folder / "list_eval_partition.txt").write_text("".join(f"{m} {p}\n" for m, p in zip(names, partition)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{m} {1000 + i}\n" for i, m in enumerate(names)))
    (folder / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{m}    95  71 226 313\n" for m in names)
    )
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\n{header}\n" + "".join(f"{m} 69  109  106  113   77  142   73  152  108  154\n" for m in names)
    )
    return {"filenames": names, "partition": np.array(partition), "attr": attr}


def utkface_colour(age: int, gender: int, race: int) -> tuple[int, int, int]:
    """The solid colour of the UTKFace fixture image with these labels."""
    return (3 * age, 100 + 100 * gender, 40 * race)


def write_utkface(root: Path, per_cell: int = 4) -> dict:
    """Write ``<root>/UTKFace/`` with ``per_cell`` 200x200 faces per (gender, race) and three malformed names.

    Ages cycle through the four age bins. One file per cell uses the plain ``.jpg`` suffix instead of
    ``.jpg.chip.jpg``. Returns ``{"labels": [(age, gender, race), ...], "malformed": [names]}``.
    """
    folder = Path(root) / "UTKFace"
    folder.mkdir(parents=True, exist_ok=True)
    labels, k = [], 0
    for gender in (0, 1):
        for race in range(5):
            for j in range(per_cell):
                age = (5, 25, 45, 70)[(k + j) % 4] + race
                suffix = ".jpg" if j == 0 else ".jpg.chip.jpg"
                name = f"{age}_{gender}_{race}_2017011617452{k:04d}{suffix}"
                Image.new("RGB", (200, 200), utkface_colour(age, gender, race)).save(folder / name, quality=95)
                labels.append((age, gender, race))
                k += 1
    # Malformed names of the kinds found in the real release: a missing field, a non-integer field.
    malformed = ["39_1_20170116174525125.jpg.chip.jpg", "61_x_3_20170109150557335.jpg.chip.jpg"]
    for name in malformed:
        Image.new("RGB", (200, 200), (0, 0, 0)).save(folder / name)
    return {"labels": labels, "malformed": malformed}


def tiny_colour(c: int, i: int) -> tuple[int, int, int]:
    """Solid colour of fixture image ``i`` of the class at position ``c`` in ``TINY_WNIDS``."""
    return (60 * c + 20, 5 * i + 30, 200 - 20 * c)


def write_tinyimagenet(root: Path, per_class_train: int = 10, per_class_val: int = 2) -> dict:
    """Write ``<root>/tiny-imagenet-200/`` for the classes ``TINY_WNIDS`` (64x64 JPEGs, one of them grayscale).

    Returns ``{"val": [(file, wnid), ...]}``, the annotation rows written to ``val/val_annotations.txt``.
    """
    folder = Path(root) / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "test" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in TINY_WNIDS))
    words = dict(TINY_WORDS, n00001740="entity", n09999999="unused class")
    (folder / "words.txt").write_text("".join(f"{w}\t{t}\n" for w, t in sorted(words.items())))
    for c, wnid in enumerate(TINY_WNIDS):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(per_class_train):
            Image.new("RGB", (64, 64), tiny_colour(c, i)).save(images / f"{wnid}_{i}.JPEG", quality=95)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(
            "".join(f"{wnid}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(per_class_train))
        )
    # The first train image is grayscale, as some real ones are; the loader must return 3 channels.
    Image.new("L", (64, 64), 77).save(folder / "train" / TINY_WNIDS[0] / "images" / f"{TINY_WNIDS[0]}_0.JPEG")
    val = []
    for k in range(per_class_val * len(TINY_WNIDS)):
        c = k % len(TINY_WNIDS)
        name = f"val_{k}.JPEG"
        Image.new("RGB", (64, 64), tiny_colour(c, 20 + k)).save(folder / "val" / "images" / name, quality=95)
        val.append((name, TINY_WNIDS[c]))
    (folder / "val" / "val_annotations.txt").write_text("".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in val))
    for k in range(2):
        Image.new("RGB", (64, 64), (1, 2, 3)).save(folder / "test" / "images" / f"test_{k}.JPEG")
    return {"val": val}
