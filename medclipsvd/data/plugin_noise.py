"""MONAI's optional nvImageCodec DICOM decoder says, on every machine without it (no CUDA build of
nvImageCodec: most), that it "did not register successfully" and that it is skipping its registration, once
per image loader built. medclipsvd decodes DICOM with pydicom and never needs that plugin, so the two messages
are noise to our users. Only these two exact messages are dropped: every other warning and log record,
ours and MONAI's, still shows."""
from __future__ import annotations

import logging
import warnings

PLUGIN_LOGGER = "monai.data.nvimgcodec_pydicom_plugin"
_WARNING = r"NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register successfully"
_LOG_MESSAGE = "nvImageCodec is not available; skipping pydicom decoder plugin registration."


class _DropPluginNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _LOG_MESSAGE


def silence_decoder_plugin_notice() -> None:
    """Idempotent: the filters are installed once per process."""
    warnings.filterwarnings("ignore", message=_WARNING, category=UserWarning)
    logger = logging.getLogger(PLUGIN_LOGGER)
    if not any(isinstance(f, _DropPluginNotice) for f in logger.filters):
        logger.addFilter(_DropPluginNotice())
