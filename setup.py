"""Build hook: ship the top-level pipelines/ and configs/ folders inside the wheel.

They stay at the repository's top level (where users read and edit them), and `build_py` copies them to
medclipsvd/_shipped/ in the build, so `pip install .` (non-editable) finds them next to the code.
medclipsvd.engine.config looks there first, then in the checkout; MEDCLIPSVD_PIPELINES_DIR and
MEDCLIPSVD_CONFIGS_DIR override both. Everything else is in pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("pipelines", "configs")


class BuildWithShippedData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # editable installs read the checkout's folders directly
            return
        for name in SHIPPED:
            source = ROOT / name
            if not source.is_dir():  # an sdist without them (MANIFEST.in grafts them) would be a broken build
                raise FileNotFoundError(f"{source} is missing; medclipsvd needs it in the package")
            target = Path(self.build_lib) / "medclipsvd" / "_shipped" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": BuildWithShippedData})
