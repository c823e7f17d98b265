"""Fast start: listing and help commands must not import the heavy stacks (torch alone costs 1.5-2 s).

A deterministic guard, not a timing assertion: each command runs in a fresh interpreter, which then
reports which of the heavy modules ended up in sys.modules. Measured times are in docs/benchmarks.md."""
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "open_clip", "mlflow", "monai", "SimpleITK", "timm", "transformers", "ray", "pydicom",
         "nibabel", "pandas", "matplotlib", "sklearn")

PROBE = """
import json, sys
sys.argv = ["medclipsvd", *json.loads(sys.argv[1])]
from medclipsvd.cli.app import main
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
print("\\n@@" + json.dumps({"code": code, "loaded": sorted(m for m in json.loads(%r) if m in sys.modules)}))
""" % json.dumps(HEAVY)


@pytest.mark.parametrize("args", [
    ["--help"], ["data", "list"], ["data", "list", "--suite", "biomedical"], ["pipelines"], ["pipelines", "--json"],
    ["backbones"], ["backbones", "--json"], ["backbones", "--open-clip"], ["backbones", "--all"],
    ["backbones", "--all", "--json"], ["train", "--help"], ["benchmark", "--help"],
    ["predict", "--help"],
], ids=lambda a: " ".join(a))
def test_listing_and_help_import_no_heavy_stack(args, tmp_path):
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert "@@" in out.stdout, out.stderr
    report = json.loads(out.stdout.rsplit("@@", 1)[1])
    assert report["code"] == 0, out.stdout + out.stderr
    assert report["loaded"] == [], f"`medclipsvd {' '.join(args)}` imported {report['loaded']}"
