"""One NIfTI path (issue 17): `api.predict` and the serving `Predictor` see the same pixels for a NIfTI volume
(before, api.predict read it through nibabel with percentile scaling and the Predictor through SimpleITK with
CT windows), and that is the volume path training uses for custom data."""
import numpy as np
import pytest

from volume_synth import write_nifti


@pytest.fixture
def ct_volume(tmp_path):
    z, y, x = np.meshgrid(np.arange(5), np.arange(9), np.arange(11), indexing="ij")
    hu = (-1000 + 60 * x + 25 * y + 300 * z).astype(np.int16)  # HU-like values, every plane different
    return write_nifti(tmp_path / "ct.nii.gz", np.transpose(hu, (2, 1, 0)))  # NIfTI is x, y, z


def test_api_predict_and_predictor_read_a_volume_identically(ct_volume):
    from medclipsvd import api
    from medclipsvd.backbones import load_backbone
    from medclipsvd.data.volumes.read import load_volume_sample
    from medclipsvd.serving.inputs import PathPolicy
    from medclipsvd.serving.predictor import Predictor

    bb = load_backbone("tiny-clip", random_init=True)
    predictor = Predictor(bb, ["a", "b"], "a photo of {}.", "cpu", paths=PathPolicy.local())
    (served,) = predictor._images(str(ct_volume), None)
    ours = api._read_input(ct_volume)
    assert ours.dtype == served.dtype == np.float32 and ours.shape == served.shape
    np.testing.assert_array_equal(ours, served)
    # and it is the training path for custom volumes (the middle axial plane, auto window)
    train = load_volume_sample(str(ct_volume), slices="middle", window=None, axis="axial")
    np.testing.assert_array_equal(ours, np.ascontiguousarray(train.transpose(1, 2, 0)))


def test_two_d_files_still_read_through_their_reader(tmp_path):
    from PIL import Image

    from medclipsvd import api
    from medclipsvd.data.readers.dispatch import read_image

    png = tmp_path / "a.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).save(png)
    np.testing.assert_array_equal(api._read_input(png), read_image(str(png)))
