"""A Rescale Slope of 0 maps every pixel to one value: the image would be read blank and classified as if it
were a real one. It is refused, naming the file and the tag, at every place a rescale is read (issue 16 item 8)."""
from __future__ import annotations

import numpy as np
import pytest
from volume_synth import write_series

from medclipsvd.errors import DataError


def _set(path, **tags):
    import pydicom

    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path)
    return path


@pytest.fixture
def series(tmp_path):
    return sorted(write_series(tmp_path / "ct", n=4, names="ordered"))


def test_good_rescale_still_reads(series):
    from medclipsvd.data.readers.dicom import check_dicom_header, read_dicom
    from medclipsvd.data.volumes.series import read_header

    assert check_dicom_header(str(series[0])) == 1 and read_header(str(series[0])).rows == 6
    img = read_dicom(str(series[0]))
    assert img.shape == (6, 7, 3) and float(img.max() - img.min()) > 0.1  # a real image, not blank


@pytest.mark.parametrize("slope, intercept, said", [("0", "-1024", "RescaleSlope (0028,1053) is 0"),
                                                    ("nan", "0", "RescaleSlope (0028,1053) is nan"),
                                                    ("1", "inf", "RescaleIntercept (0028,1052) is inf")])
def test_blanking_or_non_finite_rescale_is_refused_everywhere(series, slope, intercept, said):
    from medclipsvd.data.readers.dicom import check_dicom_header, read_dicom
    from medclipsvd.data.volumes.series import read_header

    bad = _set(series[2], RescaleSlope=slope, RescaleIntercept=intercept)
    for read in (check_dicom_header, read_dicom, read_header):  # header check, 2-D read, series scan
        with pytest.raises(DataError) as exc:
            read(str(bad))
        assert str(exc.value).startswith(f"{bad}: DICOM {said}") and "remove the file" in str(exc.value)


def test_series_with_a_slope_zero_slice_is_refused_naming_that_slice(series):
    from medclipsvd.data.volumes.selection import scan_folder

    bad = _set(series[1], RescaleSlope="0")
    with pytest.raises(DataError, match=rf"^{bad}: DICOM RescaleSlope \(0028,1053\) is 0"):
        scan_folder(series[0].parent)


def test_rescale_values_are_applied_unchanged():
    from medclipsvd.data.readers.dicom import check_rescale

    assert check_rescale("x.dcm", -2.5, 100.0) == (-2.5, 100.0)  # a negative slope is unusual, not blank
    assert np.isfinite(check_rescale("x.dcm", 1e-6, -1024.0)).all()
