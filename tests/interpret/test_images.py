"""Image sources for the head analysis: plain folders and registered datasets."""
from pathlib import Path

import pytest
import torch

from medclipsvd.errors import DataError
from medclipsvd.interpret.images import ImageRef, batches, dataset_images, folder_images, load_pil

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _pngs(folder: Path, n: int):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((torch.rand(20, 24, 3) * 255).byte().numpy()).save(folder / f"{i}.png")


def test_folder_is_searched_recursively_and_subsampled(tmp_path):
    _pngs(tmp_path / "a", 5)
    _pngs(tmp_path / "b" / "c", 5)
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "backup.tar.gz").write_bytes(b"x")
    (tmp_path / "a" / "vol.nii.gz").write_bytes(b"x")         # counted (NIfTI), read later by medclipsvd.data
    assert len(folder_images(tmp_path)) == 11
    (tmp_path / "a" / "vol.nii.gz").unlink()
    sub = folder_images(tmp_path, max_images=4, seed=1)
    assert len(sub) == 4 and sub == folder_images(tmp_path, max_images=4, seed=1)
    x = next(batches(sub, lambda im: torch.tensor(im.size, dtype=torch.float32), batch_size=3))
    assert x.shape == (3, 2) and x[0].tolist() == [24.0, 20.0]


@pytest.mark.parametrize("make,match", [
    (lambda p: None, "not a folder"),
    (lambda p: p.mkdir(), "no image files found"),
])
def test_bad_folders(tmp_path, make, match):
    target = tmp_path / "imgs"
    make(target)
    with pytest.raises(DataError, match=match):
        folder_images(target)


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_pil(ImageRef(str(bad)))


@pytest.mark.realdata
@pytest.mark.skipif(not (DATA / "biomedical" / "BUSI").is_dir(), reason="../shared/data/biomedical/BUSI is absent")
def test_dataset_images_are_class_balanced():
    refs = dataset_images("BUSI", DATA / "biomedical", "test", max_images=12)
    assert len(refs) == 12
    classes = [Path(r.path).parent.name for r in refs]
    assert {c: classes.count(c) for c in set(classes)} == {"benign_tumor": 4, "malignant_tumor": 4, "normal_scan": 4}
    assert load_pil(refs[0]).mode == "RGB"
