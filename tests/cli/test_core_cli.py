"""`medclipsvd backbones`, `summary`, `--help` and error handling, through the real entry point."""
import json
import subprocess
import sys


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "medclipsvd", *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_commands():
    out = run("--help")
    assert out.returncode == 0
    for command in ("backbones", "summary"):
        assert command in out.stdout


def test_backbones_lists_the_registry_as_json():
    out = run("backbones", "--json")
    assert out.returncode == 0
    names = [json.loads(line)["name"] for line in out.stdout.splitlines()]
    assert names == ["biomedclip", "clip-vit-b16", "tiny-biomedclip", "tiny-clip", "tiny-siglip"]


def test_summary_json_reports_counts_and_equivalence(tmp_path):
    out = subprocess.run([sys.executable, "-m", "medclipsvd", "summary", "--backbone", "tiny-biomedclip", "--json"],
                         capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "MEDCLIPSVD_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["trainable_params"] == 4608 and result["total_params"] == 756_289
    assert result["towers"]["vision"]["trainable"] == result["towers"]["text"]["trainable"] == 2304
    assert result["max_rel_logit_diff"] < 1e-4


def test_unknown_backbone_is_a_clear_error_without_traceback():
    out = run("summary", "--backbone", "clip-vit-b99")
    assert out.returncode == 2
    assert "unknown backbone 'clip-vit-b99'" in out.stderr and "Traceback" not in out.stderr
