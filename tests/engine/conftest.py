import pytest

from medclipsvd.engine.synthetic import write_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """3 classes x 6 patients x 1 image, 32 px, half DICOM (fake patient tags) and half PNG."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "data", patients_per_class=6,
                                   images_per_patient=1, size=32)
