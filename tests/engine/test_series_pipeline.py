"""Issue 18 item 1: the series filter in a pipeline YAML (`series:`, `on_bad_series:`) reaches the data
loader of a run; bad values are refused when the YAML is read, naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _pipeline(tmp_path, **keys) -> str:
    p = yaml.safe_load((REPO / "pipelines" / "ct_study_folder.yaml").read_text())
    p.update(keys)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(p))
    return str(path)


def test_pipeline_series_keys_reach_load_dataset(tmp_path, monkeypatch):
    from medclipsvd.engine import run as run_mod
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline

    spec = spec_from_pipeline(_pipeline(tmp_path, series={"modality": "CT", "per_study": "thinnest"},
                                                on_bad_series="skip"),
                                      data_root=str(tmp_path), output=str(tmp_path / "out"))
    assert spec.series == {"modality": "CT", "per_study": "thinnest"} and spec.on_bad_series == "skip"
    seen = {}

    def fake_load(name, root, **kw):
        seen.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr("medclipsvd.data.load_dataset", fake_load)
    provider = run_mod.default_provider(volume=spec.load_kwargs())  # what a run gives its data loader
    with pytest.raises(RuntimeError, match="stop here"):
        provider("custom", str(tmp_path))
    assert seen["series"] == {"modality": "CT", "per_study": "thinnest"} and seen["on_bad_series"] == "skip"


@pytest.mark.parametrize("keys,needle", [
    ({"series": {"per_study": "newest"}}, "per_study='newest'"),
    ({"series": {"colour": "red"}}, "unknown key(s) ['colour']"),
    ({"on_bad_series": "ignore"}, "use error or skip"),
])
def test_bad_series_keys_are_refused_naming_them(tmp_path, keys, needle):
    from medclipsvd.engine.config import ConfigError, load_pipeline

    with pytest.raises(ConfigError) as exc:
        load_pipeline(_pipeline(tmp_path, **keys))
    assert needle in str(exc.value)


def test_command_line_series_options_override_the_pipeline(tmp_path):
    from medclipsvd.cli.hospital_options import input_flags
    from medclipsvd.engine import run as run_mod
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline

    # what `train --series ... --on-bad-series` gives
    given = input_flags(series=["modality=MR", "min_slices=10"], on_bad_series="skip").load_kwargs()
    spec = spec_from_pipeline(_pipeline(tmp_path, series={"modality": "CT"}), data_root=str(tmp_path),
                                      output=str(tmp_path / "out"), volume=given)
    assert spec.load_kwargs()["series"] == {"modality": ["MR"], "min_slices": 10}
    assert spec.load_kwargs()["on_bad_series"] == "skip"


def test_train_refuses_a_bad_series_option_in_one_line(tmp_path, capsys):
    from medclipsvd.cli.app import run

    code = run(["train", "--pipeline", "custom", "--data-root", str(tmp_path), "--output", str(tmp_path / "o"),
                "--series", "per_study=newest", "--no-mlflow", "--device", "cpu"])
    out = capsys.readouterr()
    lines = [l for l in (out.out + out.err).splitlines() if l.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "--series" in lines[0] and "thinnest" in lines[0]
    assert not (tmp_path / "o").exists()
