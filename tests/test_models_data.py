import numpy as np
import pytest
import torch

from tests.conftest import make_image_folder
from tuner import models
from tuner.data import load_dataset
from tuner.errors import DataError, ModelError
from tuner.weights import classifier_classes, load_weights, read_state_dict

# A sample of torchvision's resnet18 state_dict keys (and its size): the built-in must match them.
TORCHVISION_RESNET18_KEYS = [
    "conv1.weight",
    "bn1.running_var",
    "layer1.0.conv1.weight",
    "layer2.0.downsample.0.weight",
    "layer2.0.downsample.1.num_batches_tracked",
    "layer4.1.bn2.bias",
    "fc.weight",
    "fc.bias",
]


def test_builtin_resnets_use_torchvision_names():
    sd = models.create_model("resnet18", 10).state_dict()
    assert all(k in sd for k in TORCHVISION_RESNET18_KEYS)
    assert len(sd) == 122 and sd["fc.weight"].shape == (10, 512)
    assert models.create_model("resnet50", 1000).fc.in_features == 2048
    assert sum(p.numel() for p in models.create_model("resnet34", 1000).parameters()) == 21797672


def test_weights_round_trip_and_mismatch(tmp_path):
    model = models.create_model("resnet18", 10)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    state = read_state_dict(path)
    assert classifier_classes(state) == 10
    other = models.create_model("resnet18", 10)
    load_weights(other, state, str(path))
    assert torch.equal(other.fc.weight, model.fc.weight)
    with pytest.raises(ModelError, match="do not match the model"):
        load_weights(models.create_model("resnet34", 10), state, str(path))


def test_bad_weights_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a loadable PyTorch state_dict"):
        read_state_dict(junk)
    with pytest.raises(ModelError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pt")


def test_user_callable_and_unknown_names():
    assert isinstance(models.create_model("tests.tiny_models:mobile_net", 4), torch.nn.Module)
    with pytest.raises(ModelError, match="unknown model"):
        models.resolve_builder("resnet19")
    with pytest.raises(ModelError, match="has no callable"):
        models.resolve_builder("tests.tiny_models:nothing_here")
    with pytest.raises(ModelError, match=r"not a torch\.nn\.Module"):
        models.create_model("tests.tiny_models:not_a_model", 4)


def test_digits_split_is_fixed_by_seed():
    a, b = load_dataset("digits", 16, seed=0), load_dataset("digits", 16, seed=0)
    assert a.train.images.shape[1:] == (3, 16, 16)
    assert len(a.train) + len(a.val) + len(a.calib) + len(a.holdout) == 1797
    assert np.array_equal(a.val.labels, b.val.labels) and np.array_equal(a.holdout.labels, b.holdout.labels)
    assert not np.array_equal(a.val.labels, load_dataset("digits", 16, seed=1).val.labels)


def test_image_folder_with_and_without_split(tmp_path):
    split = make_image_folder(tmp_path / "split", classes=3, per_class=10, size=30)
    d = load_dataset(str(split), resolution=24, cache_dir=tmp_path / "cache")
    assert d.classes == ("class_0", "class_1", "class_2") and d.resolution == 24
    assert len(d.train) == 30 and d.train.images.shape[1:] == (3, 24, 24)
    assert len(d.val) == 12 and len(d.holdout) == 3  # a fifth of each class's 5 validation images kept apart
    assert d.mean == (0.485, 0.456, 0.406)
    again = load_dataset(str(split), resolution=24, cache_dir=tmp_path / "cache")  # from the decoded cache
    assert np.array_equal(again.val.images, d.val.images)
    flat = make_image_folder(tmp_path / "flat", classes=2, per_class=10, split=False)
    d2 = load_dataset(str(flat / "."), resolution=16, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    assert len(d2.train) + len(d2.val) == 20 and d2.std == (0.2, 0.2, 0.2)


def test_bad_data(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nowhere"))
    one = make_image_folder(tmp_path / "one", classes=1, per_class=4, split=False)
    with pytest.raises(DataError, match="at least 2"):
        load_dataset(str(one))
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_dataset(str(empty))


def test_holdout_is_kept_apart_per_class(tmp_path):
    """A fifth of each class's validation images leaves the validation split (none left out, none twice); 0 keeps
    none apart; a test/ folder is the held-out split itself and val/ stays whole."""
    whole, kept = load_dataset("digits", 16, holdout=0.0), load_dataset("digits", 16)
    assert whole.holdout is None and len(kept.val) + len(kept.holdout) == len(whole.val)
    for c in range(10):
        n = int((whole.val.labels == c).sum())
        assert int((kept.holdout.labels == c).sum()) == int(0.2 * n)
    rows = {img.tobytes() for img in kept.val.images}
    assert not any(img.tobytes() in rows for img in kept.holdout.images)
    assert sorted({img.tobytes() for img in whole.val.images}) == sorted(
        rows | {i.tobytes() for i in kept.holdout.images}
    )
    assert kept.fingerprint != whole.fingerprint
    root = make_image_folder(tmp_path / "with_test", classes=2, per_class=10)
    import shutil

    shutil.copytree(root / "val", root / "test")
    d = load_dataset(str(root), resolution=16)
    assert len(d.val) == 10 and len(d.holdout) == 10
    (root / "test" / "class_1").rename(root / "test" / "class_9")
    with pytest.raises(DataError, match="test/ and train/ have different class folders"):
        load_dataset(str(root), resolution=16)
