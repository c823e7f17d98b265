"""Writing outputs safely: atomic files (temp + fsync + rename) and advisory output-folder locks."""
from medclipsvd.io.atomic import (OutputError, json_safe, safetensors_bytes, torch_bytes, write_bytes,
                                  write_json, write_text)
from medclipsvd.io.lock import LOCK_NAME, OutputLockedError, output_lock

__all__ = ["OutputError", "OutputLockedError", "LOCK_NAME", "json_safe", "output_lock", "safetensors_bytes",
           "torch_bytes", "write_bytes", "write_json", "write_text"]
