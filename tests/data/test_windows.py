"""`--window` parsing and the intensity helpers of medclipsvd.data.volumes.windows, value by value (expected values
written out from the module's documented rules)."""
from __future__ import annotations

import numpy as np
import pytest

from medclipsvd.data.volumes.windows import (Window, apply_hu_window, parse_window, percentile_range, resolve_windows,
                                             scale_range, to_unit)
from medclipsvd.errors import DataError

LUNG, MEDIASTINUM, BONE = (1500.0, -600.0), (350.0, 50.0), (2000.0, 500.0)


@pytest.mark.parametrize("spec,expected", [
    (None, Window("auto", "auto")),
    ("", Window("auto", "auto")),
    (" AUTO ", Window("auto", "auto")),
    ("Lung", Window("lung", "single", (LUNG,))),
    ("400/40", Window("400/40", "single", ((400.0, 40.0),))),
    ("W400/L-40", Window("w400/l-40", "single", ((400.0, -40.0),))),
    ("0.5/10", Window("0.5/10", "single", ((0.5, 10.0),))),  # any width > 0
    ("multi", Window("multi", "multi", (LUNG, MEDIASTINUM, BONE))),
    ("multi:bone, brain ,abdomen", Window("multi:bone, brain ,abdomen", "multi",
                                           (BONE, (80.0, 40.0), (400.0, 50.0)))),
    ("multi:400/40,lung,1/0", Window("multi:400/40,lung,1/0", "multi", ((400.0, 40.0), LUNG, (1.0, 0.0)))),
])
def test_parse_window(spec, expected):
    got = parse_window(spec)
    assert got == expected
    assert got.channels == (3 if expected.kind == "multi" else 1)


@pytest.mark.parametrize("spec,message", [
    ("0/40", "window '0/40': a custom window is WIDTH/LEVEL in HU with WIDTH > 0, e.g. 400/40."),
    ("-5/40", "window '-5/40': a custom window is WIDTH/LEVEL in HU with WIDTH > 0, e.g. 400/40."),
    ("nan/40", "window 'nan/40': a custom window is WIDTH/LEVEL in HU with WIDTH > 0, e.g. 400/40."),
    ("400/inf", "window '400/inf': a custom window is WIDTH/LEVEL in HU with WIDTH > 0, e.g. 400/40."),
    ("abc/def", "window 'abc/def': a custom window is WIDTH/LEVEL in HU with WIDTH > 0, e.g. 400/40."),
    ("lungs", "unknown window 'lungs'; use auto, one of lung, mediastinum, bone, brain, abdomen, a custom "
              "WIDTH/LEVEL such as 400/40, or multi[:a,b,c]."),
    ("multi:lung,bone", "window 'multi:lung,bone': multi takes exactly three windows (one per colour channel), "
                        "e.g. multi:lung,mediastinum,bone."),
    ("multi:lung,bone,", "window 'multi:lung,bone,': multi takes exactly three windows (one per colour channel), "
                         "e.g. multi:lung,mediastinum,bone."),
    ("multi:lung,0/40,bone", "window 'multi:lung,0/40,bone': a custom window is WIDTH/LEVEL in HU with WIDTH > 0, "
                             "e.g. 400/40."),
    ("multi:lung,bone,x", "unknown window 'x'; use auto, one of lung, mediastinum, bone, brain, abdomen, a custom "
                          "WIDTH/LEVEL such as 400/40, or multi[:a,b,c]."),
])
def test_bad_window_messages(spec, message):
    with pytest.raises(DataError) as err:
        parse_window(spec)
    assert str(err.value) == message


def test_hu_window_is_float32_and_clipped():
    out = apply_hu_window(np.array([-1000.0, 40.0, 240.0, 5000.0]), 400, 40)  # float64 in: float32 out
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0, 1.0], rtol=0, atol=1e-7)
    assert apply_hu_window([[-160.0]], 400, 40).dtype == np.float32


def test_percentiles_and_range_scaling():
    x = np.arange(1001, dtype=np.float64)
    assert percentile_range(x) == pytest.approx((5.0, 995.0))  # the 0.5th and 99.5th percentiles
    out = scale_range(np.array([0.0, 5.0, 500.0, 995.0, 1000.0]), 5.0, 995.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 495 / 990, 1.0, 1.0], rtol=0, atol=1e-7)
    flat = scale_range(np.array([3.0, 3.0]), 3.0, 3.0)  # a constant volume: zeros, not NaN
    assert flat.dtype == np.float32 and flat.tolist() == [0.0, 0.0]
    assert scale_range(np.array([3.0]), 4.0, 3.0).tolist() == [0.0]


def test_resolve_windows_and_to_unit():
    auto, multi, single = parse_window("auto"), parse_window("multi"), parse_window("400/40")
    assert resolve_windows(auto, False, (100.0, 0.0), (2.0, 9.0)) == [("range", 2.0, 9.0)]  # not CT: percentiles
    assert resolve_windows(single, False, None, (2.0, 9.0)) == [("range", 2.0, 9.0)]
    assert resolve_windows(auto, True, (100.0, 0.0), (2.0, 9.0)) == [("hu", 100.0, 0.0)]  # CT: its own window
    assert resolve_windows(auto, True, None, (2.0, 9.0)) == [("hu", 350.0, 50.0)]  # else mediastinum
    assert resolve_windows(single, True, (100.0, 0.0), (2.0, 9.0)) == [("hu", 400.0, 40.0)]
    assert resolve_windows(multi, True, None, (0, 1)) == [("hu", *LUNG), ("hu", *MEDIASTINUM), ("hu", *BONE)]
    x = np.array([-160.0, 40.0, 240.0])
    np.testing.assert_allclose(to_unit(x, ("hu", 400.0, 40.0)), [0.0, 0.5, 1.0], atol=1e-7)
    np.testing.assert_allclose(to_unit(x, ("range", -160.0, 240.0)), [0.0, 0.5, 1.0], atol=1e-7)
