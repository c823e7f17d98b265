"""One file -> one float32 HxWx3 image in [0, 1]. ``formats.py`` is THE table (file kind -> how it is
recognised, read and header-checked); ``dispatch.py`` reads through it; one module per kind (``pil``,
``npz``, ``dicom``, ``nifti``) and ``common`` for what they share (size limits, pixel conversion).
A new format is one module here plus one row in the table. Nothing here knows datasets or volumes."""
