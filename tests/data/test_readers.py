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


def test_nifti_4d_uses_first_volume(tmp_path):
    vol = np.stack([_volume(), _volume() * 0], axis=-1)
    out = read_image(_save_nifti(tmp_path / "t.nii", vol), 0)
    np.testing.assert_allclose(out[:, :, 0], _expected(vol[:, :, 0, 0]), atol=1e-6)


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
from medclipsvd.data.readers import read_image
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

    from medclipsvd.data.readers import check_readable

    p = tmp_path / "wide.png"
    Image.new("L", (400, 100), 128).save(p)
    monkeypatch.setenv("MEDCLIPSVD_WORK_IMAGE_PIXELS", "10000")
    assert read_image(p).shape == (50, 200, 3)  # box-reduced by 2 to stay within 10,000 pixels
    monkeypatch.setenv("MEDCLIPSVD_MAX_IMAGE_PIXELS", "39999")
    with pytest.raises(DataError, match=r"wide\.png: image is 400x100 = 0.04 megapixels, above the limit"):
        read_image(p)
    assert "above the limit" in check_readable(str(p), None, "header")
