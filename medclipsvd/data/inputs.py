"""What a user hands to a trained model at prediction time -> the 2-D images (views) it classifies.

An input is a 2-D image file (PNG/JPEG/TIFF, a DICOM file, a 2-D NIfTI), a DICOM series folder (or
``folder#series=KEY``) or a 3-D NIfTI volume. Volumes become views with the 3-D -> 2-D settings the model
was trained with (``InputPolicy``: slices, window, axis, dicom_frames, as recorded in the training run's results.json);
`medclipsvd predict` and exported MONAI bundles both read inputs here, so they see the same pixels, and a
volume's prediction is the mean of its views' probabilities (the study-level rule of evaluation)."""
from __future__ import annotations

import os

import numpy as np

from medclipsvd.data.volumes.policy import InputPolicy
from medclipsvd.data.volumes.series import SERIES_SEP


def is_volume_input(path: str | os.PathLike, dicom_frames: str = "middle") -> bool:
    """A series folder, ``folder#series=KEY``, a NIfTI volume (3-D or more), or with dicom_frames="volume"
    a multi-frame DICOM file."""
    p = os.fspath(path)
    if SERIES_SEP in p or os.path.isdir(p):
        return True
    from medclipsvd.data.readers.formats import file_kind

    kind = file_kind(p)
    if kind == "nifti":
        from medclipsvd.data.volumes.series import is_volume_file

        return is_volume_file(p)
    if kind == "dicom" and dicom_frames == "volume":
        from medclipsvd.data.readers.dicom import dicom_num_frames

        return dicom_num_frames(p) > 1
    return False


def read_input_views(path: str | os.PathLike, view: InputPolicy | None = None,
                     index: int | None = None) -> list[np.ndarray]:
    """The float32 HxWx3 images in [0, 1] the model classifies for one input (one for 2-D files)."""
    view = view or InputPolicy()
    p = os.fspath(path)
    if not is_volume_input(p, view.dicom_frames):
        from medclipsvd.data.readers.formats import file_kind
        from medclipsvd.data.readers.dispatch import read_image

        if index is None and view.dicom_frames == "all" and file_kind(p) == "dicom":
            from medclipsvd.data.readers.dicom import dicom_num_frames

            n = dicom_num_frames(p)
            return [read_image(p, k) for k in range(n)] if n > 1 else [read_image(p)]
        return [read_image(p, index)]
    from medclipsvd.data.volumes.read import load_volume_sample

    x = load_volume_sample(p, slices=view.slices, window=view.window, axis=view.axis, index=index,
                           modality=view.modality)
    stack = x[None] if x.ndim == 3 else x
    return [np.ascontiguousarray(v.transpose(1, 2, 0), dtype=np.float32) for v in stack]
