"""InputPolicy: the one value for slices / window / axis / dicom_frames, and its one record (issue 17)."""
import pytest

from medclipsvd.data.volumes.policy import InputPolicy, check_option
from medclipsvd.errors import DataError


def test_reads_the_record_and_folders_written_before_it():
    new = {"dataset": "custom", "input": {"slices": "all", "window": "lung", "axis": "coronal",
                                          "dicom_frames": "volume"}}
    old = {"dataset": "custom", "slices": "all", "window": "lung", "axis": "coronal", "dicom_frames": "volume"}
    expected = InputPolicy(slices="all", window="lung", axis="coronal", dicom_frames="volume")
    assert InputPolicy.from_run(new) == expected
    assert InputPolicy.from_run(old) == expected
    assert InputPolicy.from_run(None) == InputPolicy("middle", None, "axial", "middle")
    assert InputPolicy.from_run(new, slices="middle", window=None).slices == "middle"
    assert InputPolicy.from_run(new, window=None).window == "lung"  # None overrides nothing


def test_record_and_summary_shapes():
    p = InputPolicy(slices="slices:3", window=None)
    assert list(p.to_dict().items()) == [("slices", "slices:3"), ("window", None), ("axis", "axial"),
                                         ("dicom_frames", "middle")]
    assert p.summary() == {"slices": "slices:3", "axis": "axial", "window": "auto", "dicom_frames": "middle"}
    assert InputPolicy(window="lung").view == "middle|axial|lung"


@pytest.mark.parametrize("key,value", [("slices", "most"), ("axis", "diagonal"), ("window", "brain-ish"),
                                       ("dicom_frames", "some")])
def test_bad_values_are_data_errors(key, value):
    with pytest.raises(DataError):
        check_option(key, value)
    with pytest.raises(DataError):
        InputPolicy(**{key: value}).validate()


def test_good_values_pass():
    for key, value in (("slices", "all"), ("axis", "sagittal"), ("window", "lung"), ("dicom_frames", "all")):
        check_option(key, value)
