"""CIFAR-10 and ImageFolder datasets in their real on-disk layouts: facts without torch,
plan-time errors naming the file, reproducible subsets, loading, the paper's augmentations
and training batches that a mid-epoch resume reproduces."""
from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from data_folders import write_cifar, write_image_folder
from test_workers_support import ROOT

from workers import catalog

from workers.data import augment

from workers.data import datasets as data

from workers.data import folders
from workers.data.image_folder import LazyImages
from workers.training.batches import epoch_batches


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return write_cifar(tmp_path_factory.mktemp("cifar"), per_batch=12)


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("imagenet"), classes=3, train_per_class=4, val_per_class=2)


def test_cifar_facts_need_no_torch_and_match_the_loaded_split(cifar_root):
    cfg = {"name": "cifar10", "root": str(cifar_root)}
    probe = ("import sys, json; from workers import catalog; "
             f"print(json.dumps(catalog.dataset_facts({cfg!r}))); sys.exit(int('torch' in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '{"num_classes": 10, "in_channels": 3, "train_size": 60, "test_size": 12}'
    split = data.load_split(cfg)
    assert split.train_images.shape == (60, 3, 32, 32) and split.test_images.shape == (12, 3, 32, 32)
    assert split.augment == "flip_crop" and split.test_labels.tolist() == [(5 * 12 + j) % 10 for j in range(12)]
    with open(cifar_root / "cifar-10-batches-py" / "data_batch_2", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")[b"data"][3].reshape(3, 32, 32)
    expected = (torch.from_numpy(raw.astype(np.float32)) / 255 - torch.tensor(data.CIFAR_MEAN).view(3, 1, 1)) \
        / torch.tensor(data.CIFAR_STD).view(3, 1, 1)
    assert torch.allclose(split.train_images[12 + 3], expected)  # batch 2, image 3 (CHW rows)
    # the cifar-10-batches-py folder itself is accepted as root too
    assert data.train_size({"name": "cifar10", "root": str(cifar_root / "cifar-10-batches-py")}) == 60


def test_a_malformed_cifar_folder_names_the_file(tmp_path):
    root = write_cifar(tmp_path / "c", per_batch=4)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(folders.DataFolderError, match=r"data_batch_3: missing; expected a pickled CIFAR-10 batch"):
        folders.cifar_facts(str(root))
    bad = write_cifar(tmp_path / "d", per_batch=4)
    with open(bad / "cifar-10-batches-py" / "test_batch", "wb") as handle:
        pickle.dump({b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0, 1, 2, 3]}, handle)
    with pytest.raises(folders.DataFolderError, match=r"test_batch: b'data' must be an array of shape \(N, 3072\)"):
        folders.cifar_facts(str(bad))
    (tmp_path / "e").mkdir()
    with pytest.raises(folders.DataFolderError, match="cifar-10-batches-py: no such folder"):
        data.dataset_spec({"name": "cifar10", "root": str(tmp_path / "e")})
    with pytest.raises(ValueError, match="needs 'root'"):
        data.dataset_spec({"name": "cifar10"})
    with pytest.raises(ValueError, match="unknown key 'root'"):
        data.dataset_spec({"name": "digits", "root": "x"})


def test_image_folder_facts_loading_and_errors(folder_root, tmp_path):
    cfg = {"name": "imagenet", "root": str(folder_root), "image_size": 16}
    assert catalog.dataset_facts(cfg) == {"num_classes": 3, "in_channels": 3, "train_size": 12, "test_size": 6}
    split = data.load_split(cfg)
    assert isinstance(split.train_images, LazyImages) and split.train_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    batch = split.test_images[1:4]
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == torch.float32
    assert torch.equal(batch, split.test_images[1:4])  # the evaluation view is deterministic
    view = split.train_images[torch.tensor([5, 0])]  # a lazy subset, still on disk
    assert isinstance(view, LazyImages) and view.files == (split.train_images.files[5], split.train_images.files[0])

    broken = write_image_folder(tmp_path / "b", classes=2, train_per_class=1, val_per_class=1)
    (broken / "val" / "n9999").mkdir()
    with pytest.raises(folders.DataFolderError, match=r"val/n9999: class folder absent from train/"):
        folders.image_folder_facts(str(broken))
    empty = write_image_folder(tmp_path / "e", classes=2, train_per_class=1, val_per_class=1)
    (empty / "train" / "n0005").mkdir()
    with pytest.raises(folders.DataFolderError, match=r"train/n0005: no images; expected files ending in .jpg"):
        folders.image_folder_facts(str(empty))
    no_val = write_image_folder(tmp_path / "v", classes=1, train_per_class=1, val_per_class=0)
    for child in (no_val / "val").iterdir():
        child.rmdir()
    (no_val / "val").rmdir()
    with pytest.raises(folders.DataFolderError, match=r"/val: no such folder; expected val/<class>/<images>"):
        folders.image_folder_facts(str(no_val))


def test_subsets_are_reproducible_exact_and_known_without_loading(cifar_root, folder_root):
    labels = [i % 10 for i in range(1000)] + [3] * 7
    picked = folders.subset_positions(labels, "images_per_class", 0.1, seed=0)
    assert picked == folders.subset_positions(labels, "images_per_class", 0.1, seed=0)
    assert picked != folders.subset_positions(labels, "images_per_class", 0.1, seed=1)
    assert len(picked) == round(0.1 * len(labels))
    per_class = np.bincount([labels[p] for p in picked], minlength=10)
    assert per_class.tolist() == [10, 10, 10, 11, 10, 10, 10, 10, 10, 10]  # 107 images of class 3 -> 10.7 -> 11
    classes = folders.subset_positions(labels, "classes", 0.2, seed=4)
    chosen = sorted({labels[p] for p in classes})
    assert len(chosen) == 2 and classes == [p for p, label in enumerate(labels) if label in chosen]
    assert chosen != sorted({labels[p] for p in folders.subset_positions(labels, "classes", 0.2, seed=5)}) or \
        chosen != sorted({labels[p] for p in folders.subset_positions(labels, "classes", 0.2, seed=6)})

    for cfg in ({"name": "cifar10", "root": str(cifar_root), "subset": {"kind": "images_per_class", "fraction": 0.5,
                                                                          "seed": 3}},
                {"name": "cifar10", "root": str(cifar_root), "subset": {"kind": "classes", "fraction": 0.3, "seed": 0}},
                {"name": "image_folder", "root": str(folder_root), "subset": {"kind": "classes", "fraction": 0.4}}):
        full = data.load_split({k: v for k, v in cfg.items() if k != "subset"})
        split = data.load_split(cfg)
        assert split.train_images.shape[0] == catalog.dataset_facts(cfg)["train_size"] == split.train_labels.shape[0]
        keep = folders.subset_positions(full.train_labels.tolist(), cfg["subset"].get("kind", "images_per_class"),
                                        cfg["subset"]["fraction"], cfg["subset"].get("seed", 0))
        assert split.train_labels.tolist() == [full.train_labels[p].item() for p in keep]
        assert split.test_labels.shape == full.test_labels.shape  # the test split stays whole
        if isinstance(full.train_images, torch.Tensor):
            assert torch.equal(split.train_images, full.train_images[keep])
        else:
            assert split.train_images.files == tuple(full.train_images.files[p] for p in keep)


def test_flip_crop_is_a_flip_then_a_window_of_the_padded_image():
    images = torch.randn(5, 3, 6, 7)
    params = augment.draw_flip_crop(5, torch.Generator().manual_seed(0))
    assert params.shape == (5, 3) and params[:, 1:].min() >= 0 and params[:, 1:].max() <= 4
    params[0] = torch.tensor([1, 0, 4])  # flipped, top, far right
    out = augment.flip_crop(images, params)
    for i in range(5):
        image = images[i].flip(2) if params[i, 0] else images[i]
        padded = torch.nn.functional.pad(image, (2, 2, 2, 2))
        dy, dx = params[i, 1:].tolist()
        assert torch.equal(out[i], padded[:, dy:dy + 6, dx:dx + 7])
    filled = augment.flip_crop(images[:1], torch.tensor([[0, 0, 0]]), fill=torch.tensor([1.0, 2.0, 3.0]))
    assert filled[0, :, 0, 0].tolist() == [1.0, 2.0, 3.0] and torch.equal(filled[0, :, 2:, 2:], images[0, :, :4, :5])


def test_imagenet_and_exemplar_augmentations_follow_their_generator(folder_root):
    images = LazyImages(folder_root, [f"train/n0000/img{i}.{'jpg' if i % 2 == 0 else 'png'}" for i in range(2)], 16)
    first, again, other = images.train_view(0, 7), images.train_view(0, 7), images.train_view(0, 8)
    assert first.shape == (3, 16, 16) and torch.equal(first, again) and not torch.equal(first, other)
    for _ in range(20):  # boxes stay inside a 40x30 image
        top, left, h, w = augment.random_resized_crop_box(40, 30, torch.Generator().manual_seed(_))
        assert 0 <= top and top + h <= 30 and 0 <= left and left + w <= 40 and h > 0 and w > 0
    batch = torch.randn(4, 3, 8, 8)
    jittered = augment.color_jitter(batch, torch.Generator().manual_seed(1))
    assert jittered.shape == batch.shape and torch.equal(jittered, augment.color_jitter(batch, torch.Generator().manual_seed(1)))
    assert not torch.equal(jittered, batch)
    rotated = augment.small_rotation(batch, torch.Generator().manual_seed(2), max_degrees=20)
    assert rotated.shape == batch.shape and not torch.equal(rotated, batch)
    assert torch.allclose(augment.small_rotation(batch, torch.Generator().manual_seed(2), max_degrees=0), batch, atol=1e-5)


@pytest.mark.parametrize("kind", ["cifar", "folder"])
def test_the_batches_after_a_mid_epoch_resume_are_the_ones_of_the_whole_epoch(kind, cifar_root, folder_root,
                                                                              monkeypatch):
    if kind == "cifar":
        split = data.load_split({"name": "cifar10", "root": str(cifar_root)})
    else:
        monkeypatch.setenv("PRUNESWEEP_LOADER_WORKERS", "2")  # worker processes decode and augment
        split = data.load_split({"name": "imagenet", "root": str(folder_root), "image_size": 12})
    whole = list(epoch_batches(split, seed=3, epoch=1, batch_size=5, first_step=0, device=torch.device("cpu")))
    tail = list(epoch_batches(split, seed=3, epoch=1, batch_size=5, first_step=2, device=torch.device("cpu")))
    assert len(whole) == (12 if kind == "cifar" else 3) and len(tail) == len(whole) - 2
    for (a, la), (b, lb) in zip(whole[2:], tail):
        assert torch.equal(a, b) and torch.equal(la, lb)
    other_epoch = next(epoch_batches(split, seed=3, epoch=2, batch_size=5, first_step=0, device=torch.device("cpu")))
    assert not torch.equal(other_epoch[0], whole[0][0])
    if kind == "cifar":  # augmented: not the stored images themselves
        order = torch.randperm(60, generator=torch.Generator().manual_seed(3 * 1_000_003 + 1))
        assert torch.equal(whole[0][1], split.train_labels[order[:5]])
        assert not torch.equal(whole[0][0], split.train_images[order[:5]])


def test_digits_batches_are_unchanged_by_the_new_loop():
    split = data.load_split({"name": "digits"})
    assert split.augment is None
    batches = list(epoch_batches(split, seed=0, epoch=0, batch_size=128, first_step=0, device=torch.device("cpu")))
    order = torch.randperm(1347, generator=torch.Generator().manual_seed(0))
    assert torch.equal(batches[1][0], split.train_images[order[128:256]])


def test_the_sweep_file_checks_the_data_folder_at_plan_time(write_sweep, sweep_dict, cifar_root, tmp_path):
    from orchestrator.errors import SpecError
    from orchestrator.spec import load_spec

    sweep = copy.deepcopy(sweep_dict)
    sweep["dataset"] = {"name": "cifar10", "root": str(cifar_root)}
    spec = load_spec(write_sweep(sweep))
    assert spec.dataset.facts["train_size"] == 60 and spec.iterations_per_epoch("labels") == 1
    assert spec.dataset.model_dump() == {"name": "cifar10", "root": str(cifar_root)}
    missing = tmp_path / "nowhere"
    sweep["dataset"] = {"name": "cifar10", "root": str(missing)}
    path = write_sweep(sweep)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == (f"{path}: dataset.root: {missing}: no such folder; expected a folder holding "
                               "cifar-10-batches-py/ (torchvision's CIFAR-10 on-disk format)")
    # plan works from the published sizes and says the folder is missing; launch refuses until it is there
    result = subprocess.run([sys.executable, "-m", "orchestrator", "plan", str(path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0 and f"data folder missing: {missing}" in result.stdout + result.stderr
    result = subprocess.run([sys.executable, "-m", "orchestrator", "launch", str(path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and f"dataset.root: {missing}: no such folder" in result.stderr
    assert result.stderr.count("\n") == 1 and not Path(yaml.safe_load(path.read_text())["workspace"]).exists()
    for dataset, key in (({"name": "digits", "subset": {"fraction": 0.1}}, "dataset.subset"),
                         ({"name": "imagenet"}, "dataset.root"),
                         ({"name": "cifar10", "root": str(cifar_root), "image_size": 64}, "dataset.image_size")):
        sweep["dataset"] = dataset
        with pytest.raises(SpecError, match=rf": {key}: "):
            load_spec(write_sweep(sweep))


@pytest.mark.parametrize("kind", ["cifar", "folder"])
def test_a_dense_stage_trains_on_a_data_folder(kind, cifar_root, folder_root, tmp_path):
    from test_workers_support import run

    dataset = ({"name": "cifar10", "root": str(cifar_root)} if kind == "cifar"
               else {"name": "image_folder", "root": str(folder_root), "image_size": 16})
    config = {"dataset": dataset, "arch": {"name": "small_cnn", "width": 4}, "task": "rotnet", "seed": 0,
              "recipe": {"epochs": 2, "batch_size": 8, "optimizer": "sgd", "lr": 0.05, "weight_decay": 1e-4},
              "capture_iterations": [1]}
    run(tmp_path, "dense", "dense", config)
    stage = tmp_path / "dense"
    metrics = __import__("json").loads((stage / "metrics.json").read_text())
    steps = -(-(60 if kind == "cifar" else 12) // 8)
    assert metrics["iterations"] == 2 * steps and 0 <= metrics["task_accuracy"] <= 1
    assert (stage / "DONE.json").exists() and (stage / "final.pt").exists() and (stage / "rewind_1.pt").exists()


@pytest.mark.parametrize("loader_processes", ["0", "2"])
def test_evaluation_batches_of_a_folder_are_its_central_crops_in_order(folder_root, monkeypatch, loader_processes):
    from workers.data.image_folder import eval_batches

    monkeypatch.setenv("PRUNESWEEP_LOADER_WORKERS", loader_processes)
    split = data.load_split({"name": "imagenet", "root": str(folder_root), "image_size": 12})
    images = split.train_images
    batches = list(eval_batches(images, 5))
    assert [batch.shape[0] for batch in batches] == [5, 5, 2]
    expected = torch.stack([images.eval_view(p) for p in range(len(images))])
    assert torch.equal(torch.cat(batches), expected)
    tensor = expected.clone()
    assert [b.data_ptr() for b in eval_batches(tensor, 5)] == [tensor[s:s + 5].data_ptr() for s in (0, 5, 10)]


def test_a_folder_sweep_runs_through_the_local_backend_with_loader_processes(folder_root, write_sweep, sweep_dict,
                                                                             monkeypatch, tmp_path):
    """The local backend's workers start the DataLoader's processes (daemonic ones could not)."""
    from orchestrator.cli import main

    monkeypatch.setenv("PRUNESWEEP_LOADER_WORKERS", "1")
    sweep = copy.deepcopy(sweep_dict)
    sweep.update(dataset={"name": "imagenet", "root": str(folder_root), "image_size": 12},
                 arch={"name": "small_cnn", "width": 4}, mask_source=["labels"], init=["winning_ticket"],
                 seeds=[0], rewind=[0], workspace=str(tmp_path / "ws"))
    sweep["pruning"] = {**sweep["pruning"], "fractions": [0.8]}
    sweep["recipes"] = {"labels": {"epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 0.01}}
    assert main(["launch", str(write_sweep(sweep)), "--no-progress", "--workers", "1"]) == 0
    assert len(list((tmp_path / "ws" / "stages").glob("*/DONE.json"))) == 2
