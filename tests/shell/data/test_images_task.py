"""`--task images` (docs/runtime.md §5.5): what is derived from a folder or a saved dataset, the
ImageSource each split is, the decode cache, and every kind of bad data as a one-line DataError."""

import pickle

import numpy as np
import pytest
import torch

from esper.core.errors import ConfigError
from esper.core.tasks import cnn_blocks, derive_image_preset, task_preset
from esper.shell.data import images_task
from esper.shell.data.errors import DataError
from esper.shell.data.hf_images import decode_all
from esper.shell.data.image_folder import ImageOptions
from esper.shell.data.image_source import ImageSource
from esper.shell.data.images_task import load_images_task, plan_images, stratified_heldout
from esper.testing.image_folders import CLASSES, write_class_folders, write_saved_dataset

CPU = torch.device("cpu")


def _load(options: ImageOptions, **kwargs) -> "images_task.TaskData":
    return load_images_task(options, device=CPU, data_seed=0, **kwargs)


@pytest.mark.parametrize(("size", "blocks"), [((32, 32), (3, 3)), ((28, 28), (3, 3)), ((64, 64), (4, 4)),
                                              ((224, 224), (6, 6)), ((20, 24), (3, 3)), ((4, 4), (3, 2)),
                                              ((1, 9), (3, 0)), ((512, 512), (6, 6))])
def test_the_cnn_host_fits_the_resolution(size, blocks):
    assert cnn_blocks(*size) == blocks


def test_the_images_template_is_a_task_but_needs_its_data_for_the_rest():
    assert task_preset("images").modality == "images"
    with pytest.raises(ConfigError, match="at least 2 classes"):
        derive_image_preset(input_shape=(3, 8, 8), n_classes=1, train_size=4, heldout_size=1, mean=(0.5,) * 3,
                            std=(0.2,) * 3)


def test_a_folder_with_a_val_split_gives_classes_sizes_stats_and_host(tmp_path):
    root = write_class_folders(tmp_path / "pets")
    data = _load(ImageOptions(data_dir=str(root)))
    record = data.source.images
    assert record.classes == CLASSES and record.input_shape == (3, 20, 24) and record.heldout == "split validation"
    assert record.counts == {"train": (12, 12, 12), "heldout": (4, 4, 4)} and record.sizes == {"20×24": 36}
    assert data.preset.input_shape == (3, 20, 24) and data.preset.n_classes == 3 and data.preset.host_blocks == (3, 3)
    assert tuple(data.train_inputs.shape) == (36, 3, 20, 24) and data.train_inputs.dtype == torch.uint8
    # Class k is the image whose channel 2 − k is bright: the decoded pixels follow their labels.
    bright = data.train_inputs.float().mean(dim=(2, 3)).argmax(dim=1)
    assert torch.equal(bright, 2 - data.train_labels)
    pixels = data.train_inputs.double() / 255
    assert np.allclose(data.source.normalisation.mean, pixels.mean(dim=(0, 2, 3)).numpy())
    assert np.allclose(data.source.normalisation.std, pixels.std(dim=(0, 2, 3), unbiased=False).numpy())


def test_a_flat_folder_holds_out_a_stratified_tenth_drawn_from_the_data_seed(tmp_path):
    root = write_class_folders(tmp_path / "flat", split_folders=False, per_class=20)
    plans = [plan_images(ImageOptions(data_dir=str(root)), data_seed=seed) for seed in (0, 0, 1)]
    record = plans[0].record
    assert record.counts == {"train": (18, 18, 18), "heldout": (2, 2, 2)} and record.heldout.startswith("stratified")
    assert plans[0].rows == plans[1].rows != plans[2].rows
    labels = np.repeat(np.arange(3), [1, 2, 30])
    held = stratified_heldout(labels, 3, data_seed=0)
    assert np.bincount(labels[held], minlength=3).tolist() == [0, 1, 3]  # never a class's only image


def test_jpegs_of_several_sizes_take_the_median_short_side_or_image_size(tmp_path):
    root = write_class_folders(tmp_path / "jpg", suffix=".jpg", sizes=((20, 24), (30, 40), (26, 20)))
    plan = plan_images(ImageOptions(data_dir=str(root)), data_seed=0)
    assert plan.record.input_shape == (3, 20, 20) and plan.record.size_rule.startswith("median short side 20")
    data = _load(ImageOptions(data_dir=str(root), image_size=16))
    assert tuple(data.train_inputs.shape[1:]) == (3, 16, 16) and data.preset.augment_padding == 2


def test_each_split_is_a_picklable_image_source_whose_reads_match_the_whole_decode(tmp_path):
    plan = plan_images(ImageOptions(data_dir=str(write_class_folders(tmp_path / "d"))), data_seed=0)
    source = pickle.loads(pickle.dumps(plan.train))
    assert isinstance(source, ImageSource) and source.shape == (3, 20, 24)
    whole = decode_all(plan.train)
    picked = [5, 0, 35, 5]
    assert np.array_equal(source.read(picked), whole[picked]) and source.read([]).shape == (0, 3, 20, 24)


def test_a_saved_dataset_with_named_columns_and_the_decode_cache(tmp_path, monkeypatch):
    root = write_saved_dataset(tmp_path / "saved")
    options = ImageOptions(data_dir=str(root), image_column="photo", label_column="kind")
    first = _load(options)
    assert first.source.images.heldout == "split test" and first.n_train == 36 and first.n_heldout == 12
    monkeypatch.setattr(images_task, "decode_all", lambda _: pytest.fail("decoded again instead of cached"))
    assert _load(options).source.sha256 == first.source.sha256
    with pytest.raises(DataError, match="--image-column image is not one"):
        plan_images(ImageOptions(data_dir=str(root), image_column="image"), data_seed=0)


def test_grey_and_rgb_mixed_is_an_error_unless_channels_converts_them(tmp_path):
    from PIL import Image

    root = write_class_folders(tmp_path / "mixed")
    grey = root / "train" / "red" / "000.png"
    Image.open(grey).convert("L").save(grey)
    with pytest.raises(DataError, match=f"mixed channel counts: .*1 L .*{grey}.*--channels"):
        plan_images(ImageOptions(data_dir=str(root)), data_seed=0)
    assert _load(ImageOptions(data_dir=str(root), channels=3)).preset.input_shape == (3, 20, 24)
    assert _load(ImageOptions(data_dir=str(root), channels=1)).preset.input_shape == (1, 20, 24)


def _corrupt(root):
    path = root / "train" / "green" / "003.png"
    path.write_bytes(b"not a png at all")
    return str(path)


def _truncated(root):
    path = root / "train" / "green" / "004.png"
    path.write_bytes(path.read_bytes()[:80])
    return str(path)


def _empty_class(root):
    (root / "train" / "zebra").mkdir()
    return "empty class folder"


def _one_class(root):
    import shutil

    for name in ("blue", "green"):
        for split in ("train", "val"):
            shutil.rmtree(root / split / name)
    return "found 1 class (red)"


@pytest.mark.parametrize("damage", [_corrupt, _truncated, _empty_class, _one_class])
def test_bad_folders_are_one_data_error_naming_the_problem(tmp_path, damage):
    root = write_class_folders(tmp_path / "bad")
    needle = damage(root)
    with pytest.raises(DataError) as caught:
        _load(ImageOptions(data_dir=str(root)))
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_label_out_of_range_names_its_row(tmp_path):
    root = write_saved_dataset(tmp_path / "saved", labels=[0, 1, 2, 5, 1, 0])
    with pytest.raises(DataError, match=r"train label 5 of row 3 is outside the 3 classes 0…2"):
        plan_images(ImageOptions(data_dir=str(root), image_column="photo", label_column="kind"), data_seed=0)


def test_no_source_and_a_dataset_missing_from_the_cache_are_user_errors(tmp_path):
    with pytest.raises(ConfigError, match="--data-dir DIR"):
        plan_images(ImageOptions(), data_seed=0)
    with pytest.raises(DataError, match="not in the Hugging Face cache"):
        plan_images(ImageOptions(dataset="nobody/no-such-images"), data_seed=0)


def test_image_settings_need_the_images_task_and_one_source(tmp_path):
    from esper.shell.run_config import RunConfig

    with pytest.raises(ConfigError, match="need --task images"):
        RunConfig(image_size=32)
    with pytest.raises(ConfigError, match="not both"):
        plan_images(ImageOptions(data_dir=str(tmp_path), dataset="user/pets"), data_seed=0)


def test_a_dataset_from_the_hf_cache_is_read_cache_only(tmp_path, monkeypatch):
    import datasets

    from esper.shell.data import hf

    saved = datasets.load_from_disk(str(write_saved_dataset(tmp_path / "saved")))
    asked: list[tuple[str, bool]] = []
    monkeypatch.setattr(hf, "load_hub", lambda repo, *, cache_only: asked.append((repo, cache_only)) or saved)
    plan = plan_images(ImageOptions(dataset="user/pets", image_column="photo", label_column="kind",
                                    split="train,test"), data_seed=0)
    assert asked == [("user/pets", True)] and plan.kind == "hf" and plan.id_or_path == "user/pets"
    assert plan.record.heldout == "split test" and plan.record.counts["heldout"] == (4, 4, 4)
