"""3-D volumes -> the 2-D planes a model sees. ``series`` finds and orders DICOM series / NIfTI / multi-frame
files from headers, ``read`` decodes them to canonical (LPS) arrays in physical units, ``slicing`` and
``windows`` turn a volume into planes and intensities (``masks`` and ``roi``: a SEG/RTSTRUCT drawn on the
series as the region to look at), ``views`` is the ``slices|axis|window`` string a
volume sample carries, and ``policy`` is ``InputPolicy``, the input knobs as one value. Built on
``data.readers``; knows no dataset."""
