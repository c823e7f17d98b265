"""Where a dataset's entries come from: ``layouts`` (the registry's on-disk layouts: split JSON, CoOp, FGVC,
ImageNet folders, MedMNIST), ``custom`` (hospital folders of class folders, or a CSV), ``splits`` (the seeded
patient-grouped split and the split file) and ``confine`` (every listed path stays under the data root).
Listing opens no image; ``data.checks`` does."""
