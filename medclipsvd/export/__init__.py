"""Exports of trained adapters for other runtimes: `medclipsvd export --format monai-bundle` (monai_bundle.py;
what the bundle runs is in runtime.py)."""
