"""read_image for PNG/JPEG/TIFF/BMP, MedMNIST npz and NIfTI, including the bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data_synth import write_image
from medclipsvd.data import read_image
from medclipsvd.errors import DataError


@pytest.mark.parametrize("ext,mode", [(".png", "RGB"), (".png", "L"), (".png", "RGBA"), (".png", "P"),
                                      (".bmp", "RGB"), (".tif", "L"), (".tiff", "RGB")])
def test_lossless_8bit_formats_are_exact(tmp_path, ext, mode):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (6, 7, 3) if mode in ("RGB",) else (6, 7, 4) if mode == "RGBA" else (6, 7), dtype=np.uint8)
    im = Image.fromarray(arr, mode="RGBA" if mode == "RGBA" else ("RGB" if arr.ndim == 3 else "L"))
    if mode == "P":
        im = im.convert("P")
    p = tmp_path / f"x{ext}"
    im.save(p)
    out = read_image(p)
    assert out.shape == (6, 7, 3) and out.dtype == np.float32
    expected = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
    np.testing.assert_array_equal(out, expected)


def test_jpeg_reads_close_to_source(tmp_path):
    arr = np.full((16, 16, 3), 120, np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (16, 16, 3) and abs(out.mean() - 120 / 255) < 2 / 255


def test_16bit_png_keeps_precision(tmp_path):
    arr = np.array([[0, 1000], [40000, 65535]], np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png")
    np.testing.assert_allclose(out[:, :, 0], arr / 65535.0, atol=1e-6)
    assert out[0, 1, 0] != out[0, 0, 0]  # 1000/65535 survives (it would vanish in 8 bits... almost: 3.9/255)


def test_tiff_page_index(tmp_path):
    pages = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (10, 200)]
    pages[0].save(tmp_path / "m.tif", save_all=True, append_images=pages[1:])
    assert read_image(tmp_path / "m.tif", 1)[0, 0, 0] == pytest.approx(200 / 255)
    with pytest.raises(DataError, match="page/frame 5 requested but the file has 2"):
        read_image(tmp_path / "m.tif", 5)


def test_zero_byte_image(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: file is empty \(0 bytes\).*re-copy"):
        read_image(p)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_image(tmp_path, ext):
    p = write_image(tmp_path / f"t{ext}", size=64)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"t\{ext}: image cannot be decoded.*truncated"):
        read_image(p)


def test_garbage_with_image_extension(tmp_path):
    p = tmp_path / "junk.png"
    p.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(DataError, match="junk.png: not a readable image"):
        read_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.png: file not found"):
        read_image(tmp_path / "nope.png")


def test_npz_rows(tmp_path):
    imgs = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    np.savez(tmp_path / "m.npz", train_images=imgs, train_labels=np.zeros((3, 1)))
    out = read_image(f"{tmp_path / 'm.npz'}::train_images", 2)
    np.testing.assert_array_equal(out[:, :, 1], imgs[2].astype(np.float32) / np.float32(255))
    with pytest.raises(DataError, match=r"index 3 out of range \(0..2\)"):
        read_image(f"{tmp_path / 'm.npz'}::train_images", 3)
    with pytest.raises(DataError, match="has no array 'val_images'"):
        read_image(f"{tmp_path / 'm.npz'}::val_images", 0)


# ---- NIfTI -------------------------------------------------------------------------------------------------

def _save_nifti(path, vol, affine=None):
    import nibabel as nib

    nib.save(nib.Nifti1Image(vol.astype(np.float32), np.eye(4) if affine is None else affine), str(path))
    return path


def _volume(shape=(4, 5, 6)):
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (x + 10 * y + 100 * z).astype(np.float32)  # every slice distinct, and not constant


def _expected(slice2d):
    s = np.rot90(slice2d.astype(np.float64))
    lo, hi = np.percentile(s, (0.5, 99.5))
    return np.clip((s - lo) / (hi - lo), 0, 1)


def test_nifti_middle_axial_slice(tmp_path):
    vol = _volume()
    out = read_image(_save_nifti(tmp_path / "v.nii.gz", vol))
    np.testing.assert_allclose(out[:, :, 0], _expected(vol[:, :, 3]), atol=1e-6)


def test_nifti_axial_follows_orientation_not_storage(tmp_path):
    vol = _volume()
    flipped = np.diag([1.0, 1.0, -1.0, 1.0])  # stored superior -> inferior
    out = read_image(_save_nifti(tmp_path / "f.nii", vol, flipped), 1)  # canonical slice 1 = stored slice 4
    np.testing.assert_allclose(out[:, :, 0], _expected(vol[:, :, 4]), atol=1e-6)


def test_nifti_4d_is_not_silently_its_first_volume(tmp_path):
    # issue 18 item 4: a 4-D NIfTI read as one 2-D image used its first volume without a word; now each
    # volume is a sample of the volume path (tests/data/test_volume_geometry.py) and this is one clear line
    vol = np.stack([_volume(), _volume() * 0], axis=-1)
    with pytest.raises(DataError, match=r"t\.nii: NIfTI is 4-D \(2 volumes: .*t\.nii#series=@t0 picks the first"):
        read_image(_save_nifti(tmp_path / "t.nii", vol), 0)
    one = np.stack([_volume()], axis=-1)  # a 4-D file of one volume is that volume
    out = read_image(_save_nifti(tmp_path / "one.nii", one), 0)
    np.testing.assert_allclose(out[:, :, 0], _expected(one[:, :, 0, 0]), atol=1e-6)


def test_nifti_slice_out_of_range(tmp_path):
    with pytest.raises(DataError, match="slice 9 requested but the volume has 6 axial slices"):
        read_image(_save_nifti(tmp_path / "v.nii", _volume()), 9)


def test_nifti_with_nans(tmp_path):
    vol = _volume()
    vol[1, 1, 3] = np.nan
    with pytest.raises(DataError, match=r"nan\.nii: slice middle contains 1 NaN/inf voxels; fill or mask"):
        read_image(_save_nifti(tmp_path / "nan.nii", vol))


# --- issue 10, item 7: bounded memory for decompression bombs ------------------------------------------------

_RSS_PROBE = r"""
import resource, sys
from medclipsvd.data.readers.dispatch import read_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
img = read_image(sys.argv[1])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT", img.shape[0], img.shape[1], (after - before) // 1024)
"""


def _bomb(path, side: int):
    import struct
    import zlib

    z = zlib.compressobj(9)
    raw = b"".join(z.compress(b"\x00" + bytes(side)) for _ in range(side)) + z.flush()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


@pytest.mark.slow
def test_a_10000_pixel_square_png_is_reduced_while_decoding_in_bounded_memory(tmp_path):
    # ~100 KB on disk, 10^8 pixels: before issue 10 this cost 1.2 GB per float copy (5.6 GB peak in predict)
    import subprocess
    import sys

    p = _bomb(tmp_path / "bomb.png", 10000)
    assert p.stat().st_size < 200_000
    proc = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(p)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    h, w, grew_mb = (int(x) for x in proc.stdout.split("RESULT", 1)[1].split())
    assert h * w <= 4096 * 4096 and min(h, w) >= 3000  # reduced by an integer factor (3), not refused
    assert grew_mb < 700, f"decoding grew the process by {grew_mb} MB"


def test_work_and_max_pixel_limits_are_configurable(tmp_path, monkeypatch):
    from PIL import Image

    from medclipsvd.data.samples import check_readable

    p = tmp_path / "wide.png"
    Image.new("L", (400, 100), 128).save(p)
    monkeypatch.setenv("MEDCLIPSVD_WORK_IMAGE_PIXELS", "10000")
    assert read_image(p).shape == (50, 200, 3)  # box-reduced by 2 to stay within 10,000 pixels
    monkeypatch.setenv("MEDCLIPSVD_MAX_IMAGE_PIXELS", "39999")
    with pytest.raises(DataError, match=r"wide\.png: image is 400x100 = 0.04 megapixels, above the limit"):
        read_image(p)
    assert "above the limit" in check_readable(str(p), None, "header")


# ---- resource bounds checked from the header, before decoding (issue 16 item 6) ----------------------------

@pytest.fixture
def no_decoding(monkeypatch):
    """Decoding any image with Pillow fails the test: the bound must refuse from the header alone."""
    from PIL import ImageFile

    def load(self):
        raise AssertionError(f"{getattr(self, 'filename', '?')} was decoded before its size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_a_1x60000_png_is_refused_from_its_header_before_decoding(tmp_path, no_decoding):
    from medclipsvd.data.samples import check_readable

    p = tmp_path / "strip.png"
    Image.new("L", (1, 60000)).save(p)  # tiny on disk; the shorter side resized to 224 would need ~36 GB
    assert p.stat().st_size < 2000
    msg = r"strip\.png: image is 1x60000, an aspect ratio of 60,000:1, above the limit of 50:1 .*36 GB.*" \
          r"MEDCLIPSVD_MAX_IMAGE_ASPECT=60000"
    with pytest.raises(DataError, match=msg):
        read_image(p)
    assert "aspect ratio of 60,000:1" in check_readable(str(p), None, "header")
    assert "aspect ratio of 60,000:1" in check_readable(str(p), None, "decode")


def test_side_and_aspect_limits_are_configurable(tmp_path, monkeypatch):
    p = tmp_path / "wide.png"
    Image.new("L", (300, 5), 200).save(p)  # 60:1
    with pytest.raises(DataError, match="above the limit of 50:1"):
        read_image(p)
    monkeypatch.setenv("MEDCLIPSVD_MAX_IMAGE_ASPECT", "60")
    assert read_image(p).shape == (5, 300, 3)
    monkeypatch.setenv("MEDCLIPSVD_MAX_IMAGE_SIDE", "299")
    with pytest.raises(DataError, match=r"wide\.png: image is 300x5; its longer side is above the limit of 299 "
                                        r"pixels.*MEDCLIPSVD_MAX_IMAGE_SIDE=300"):
        read_image(p)
    Image.new("L", (200, 200)).save(tmp_path / "square.png")  # 40,000 pixels, in bounds: unchanged
    assert read_image(tmp_path / "square.png").shape == (200, 200, 3)
    monkeypatch.setenv("MEDCLIPSVD_MAX_IMAGE_ASPECT", "0.5")
    with pytest.raises(DataError, match=r"MEDCLIPSVD_MAX_IMAGE_ASPECT='0.5' is not a ratio .* of at least 1"):
        read_image(p)


def test_the_longer_side_is_bounded_even_within_the_pixel_and_aspect_limits(tmp_path, no_decoding):
    p = tmp_path / "long.png"
    Image.new("L", (70000, 2000)).save(p)  # 140 megapixels (under 179), 35:1 (under 50), 70,000 > 65,536
    with pytest.raises(DataError, match=r"long\.png: image is 70000x2000; its longer side is above the limit "
                                        r"of 65,536"):
        read_image(p)


def test_a_dicom_is_bounded_by_its_rows_and_columns_before_its_pixels_are_decoded(tmp_path, monkeypatch):
    import pydicom.pixels

    from medclipsvd.data.samples import check_readable
    from test_dicom import make_dicom

    def decode(*a, **k):
        raise AssertionError("pixel data decoded before the size check")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", decode)
    p = make_dicom(tmp_path / "strip.dcm", np.zeros((1, 3000), dtype=np.uint16))
    with pytest.raises(DataError, match=r"strip\.dcm: image is 3000x1, an aspect ratio of 3,000:1"):
        read_image(p)
    assert "aspect ratio of 3,000:1" in check_readable(str(p), None, "header")


def _nifti_header_only(path, shape, spacing=(1.0, 1.0, 1.0)):
    """A NIfTI file whose header claims ``shape`` but which holds (almost) no voxels."""
    import nibabel as nib

    hdr = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.diag([*spacing, 1.0])).header.copy()
    hdr.set_data_shape(shape)
    with open(path, "wb") as fh:
        hdr.write_to(fh)
        fh.write(bytes(64))
    return path


def test_a_nifti_claiming_a_huge_volume_is_refused_from_its_header(tmp_path):
    from medclipsvd.data.samples import check_readable
    from medclipsvd.data.volumes.read import read_volume, volume_shape

    p = _nifti_header_only(tmp_path / "claims.nii", (4000, 4000, 4000))  # 64e9 voxels in a 416-byte file
    msg = r"claims\.nii: .*4000x4000x4000 = 64,000,000,000 voxels, above the limit of 1,073,741,824.*" \
          r"MEDCLIPSVD_MAX_VOLUME_VOXELS=64000000000"
    with pytest.raises(DataError, match=msg):
        read_image(p)  # the 2-D reader (nibabel): one slice, but the whole volume would be decoded
    with pytest.raises(DataError, match=msg):
        read_volume(p)  # the volume reader (SimpleITK)
    with pytest.raises(DataError, match=msg):
        volume_shape(p)  # the header check of `data check`
    assert "64,000,000,000 voxels" in check_readable(str(p), None, "header")


def test_a_nifti_slice_is_bounded_by_the_header_dims_of_its_plane(tmp_path, monkeypatch):
    p = _save_nifti(tmp_path / "thin.nii.gz", _volume((40, 10, 5)))  # axial slice 40x10 (4:1)
    assert read_image(p).shape == (10, 40, 3)  # rotated to radiological display
    monkeypatch.setenv("MEDCLIPSVD_MAX_IMAGE_ASPECT", "3")
    with pytest.raises(DataError, match=r"thin\.nii\.gz: image is 40x10, an aspect ratio of 4\.0:1"):
        read_image(p)
    monkeypatch.delenv("MEDCLIPSVD_MAX_IMAGE_ASPECT")
    monkeypatch.setenv("MEDCLIPSVD_MAX_VOLUME_VOXELS", "1999")  # 40 x 10 x 5 = 2000
    with pytest.raises(DataError, match=r"40x10x5 = 2,000 voxels, above the limit of 1,999"):
        read_image(p)


def test_a_voxel_spacing_that_would_blow_up_resampling_is_refused_before_it(tmp_path):
    from medclipsvd.data.volumes.read import load_volume_sample
    from volume_synth import write_nifti

    # 1000 mm slices of 0.01 mm pixels: a coronal plane resampled to square pixels would be 8 x 800,000
    p = write_nifti(tmp_path / "flat.nii.gz", np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8) - 1000,
                    spacing=(0.01, 0.01, 1000.0))
    assert load_volume_sample(p, axis="axial").shape == (3, 8, 8)
    with pytest.raises(DataError, match=r"flat\.nii\.gz: image is 8x800000; its longer side is above the limit"):
        load_volume_sample(p, axis="coronal")


def test_a_dicom_series_is_bounded_by_slices_rows_and_columns_before_it_is_read(tmp_path, monkeypatch):
    from medclipsvd.data.volumes import read as volume_read
    from volume_synth import write_series

    write_series(tmp_path / "s", n=6, rows=6, cols=7)
    monkeypatch.setattr(volume_read, "_read_series", lambda ref: pytest.fail("series decoded before the check"))
    monkeypatch.setenv("MEDCLIPSVD_MAX_VOLUME_VOXELS", "251")  # 6 x 6 x 7 = 252
    volume_read._load.cache_clear()
    with pytest.raises(DataError, match=r"/s: volume is 6x6x7 = 252 voxels, above the limit of 251"):
        volume_read.read_volume(tmp_path / "s")
    with pytest.raises(DataError, match="252 voxels"):
        volume_read.volume_shape(tmp_path / "s")


def _npz_claiming(path, key, shape):
    """An .npz whose member's .npy header claims ``shape`` (uint8) while holding no data."""
    import io
    import zipfile

    from numpy.lib import format as npy

    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{key}.npy", buf.getvalue())
    return path


def test_an_npz_claiming_a_huge_array_is_refused_before_it_is_decompressed(tmp_path):
    from medclipsvd.data.readers.npz import npz_array, npz_shape

    p = _npz_claiming(tmp_path / "bomb.npz", "train_images", (100_000, 10_000, 10_000))
    assert npz_shape(str(p), "train_images") == (100_000, 10_000, 10_000)
    assert npz_shape(str(p), "val_images") is None
    with pytest.raises(DataError, match=r"bomb\.npz::train_images: array is 100000x10000x10000 = "
                                        r"10,000,000,000,000 voxels.*MEDCLIPSVD_MAX_VOLUME_VOXELS"):
        npz_array(str(p), "train_images")
    with pytest.raises(DataError, match=r"image is 10000x10000 = 100 megapixels|10,000,000,000,000 voxels"):
        read_image(f"{p}::train_images", 0)


def test_npz_rows_are_bounded_by_their_image_size_from_the_header(tmp_path, monkeypatch):
    np.savez(tmp_path / "m.npz", train_images=np.zeros((3, 2, 120), np.uint8))  # 60:1 rows
    with pytest.raises(DataError, match=r"m\.npz::train_images: image is 120x2, an aspect ratio of 60\.0:1"):
        read_image(f"{tmp_path / 'm.npz'}::train_images", 0)
    monkeypatch.setenv("MEDCLIPSVD_MAX_IMAGE_ASPECT", "60")
    assert read_image(f"{tmp_path / 'm.npz'}::train_images", 0).shape == (2, 120, 3)


# ---- paths that are not regular files: refused at once, never opened for reading ---------------------------

def _fails_fast(fn, fifo, seconds: float = 20.0):
    """Run ``fn`` in a thread; if it is still blocked after ``seconds`` (on the FIFO), unblock it and fail."""
    import os
    import threading

    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # lets the blocked open() return
        os.close(fd)
        t.join(5)
        pytest.fail(f"blocked on the FIFO {fifo} for {seconds} s")
    return box


@pytest.mark.parametrize("name", ["pipe.png", "pipe.dcm", "pipe.nii.gz", "pipe"])
def test_a_fifo_as_an_image_path_is_refused_without_blocking(tmp_path, name):
    import os

    from medclipsvd.data.readers.formats import file_kind
    from medclipsvd.data.samples import check_readable

    p = tmp_path / name
    os.mkfifo(p)
    box = _fails_fast(lambda: read_image(p), p)
    assert isinstance(box.get("error"), DataError), box
    assert f"{p}: is a FIFO (named pipe), not a regular file" in str(box["error"])
    assert _fails_fast(lambda: file_kind(p), p)["value"] in ("pil", "dicom", "nifti")  # no sniffing read
    for level in ("exists", "header", "decode"):
        assert "is a FIFO" in _fails_fast(lambda: check_readable(str(p), None, level), p)["value"]


def test_a_character_device_as_an_image_is_refused(tmp_path):
    import os

    link = tmp_path / "zero.png"
    os.symlink("/dev/zero", link)
    with pytest.raises(DataError, match=r"zero\.png: is a character device, not a regular file"):
        read_image(link)
