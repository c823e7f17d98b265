"""Robustness rows for the option errors the issue-16 sweep (tools/sweep, docs/reliability-sweep.md) found
"unclear": clear one-liners that did not name the option at fault. Each now names the option, the value and
the fix, before any data is scanned or a model is built:

* `train --weights /etc/passwd` (was "/etc/passwd is not a plain tensor checkpoint", after the data scan);
  with it a device and a missing local-dir: folder given as --weights;
* `benchmark --suite ../../etc` (was "no few_shot hyper-parameters for dataset '../../etc' (looked for
  configs/few_shot/../../etc.yaml)": the name was joined into a path outside configs/);
* `train --method svd,full`, `train --backbone os.path`, `train --backbone ../../etc/passwd` (fixed during the
  sweep, kept here by rows);
* found while making the confinement of long CSVs fast: a CSV row or split-file entry `a/link/../secret.png`,
  `a/link` a symlink to a folder outside the root, was read (the check collapsed '..' before following links;
  the kernel follows the link first); and, a regression of that work the sweep caught, a CSV path holding a NUL
  byte (an unexpected ValueError instead of "missing").

The tests after ROWS check what a row cannot: the file's content is never shown, real weight files of every
format pass the --weights check, the suites a benchmark can run still validate, and a dataset name cannot
reach a hyper-parameter YAML outside configs/<protocol>/."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from harness import Corpus, Row, Scenario, run_cli, run_row

ISSUE, ITEM = 16, 8
SECRET_LINE = "root:x:0:0:patient-list:/root:/bin/bash"


def _train(c: Corpus, option: str, value: str) -> tuple[list[str], Path]:
    data = c.class_folders()
    argv = ["train", "--pipeline", "custom", "--data-root", str(data), "--output", str(c.path("out")), *c.FAST,
            "--checkpoint-every", "0"]
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    return argv, data


def _passwd_like(c: Corpus) -> Path:
    """A text file standing in for /etc/passwd (the row must not depend on the machine's)."""
    path = c.path("etc/passwd")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SECRET_LINE + "\n")
    return path


def weights_text_file(c: Corpus) -> Scenario:
    passwd = _passwd_like(c)
    argv, data = _train(c, "--weights", str(passwd))
    return Scenario(argv, ["--weights", str(passwd), "is not a weights file", "pass a .safetensors file"],
                    keep=[data, passwd])


def weights_device(c: Corpus) -> Scenario:
    argv, data = _train(c, "--weights", "/dev/zero")
    return Scenario(argv, ["--weights", "/dev/zero", "character device", "pass a .safetensors file"], keep=[data])


def weights_missing_local_dir(c: Corpus) -> Scenario:
    folder = c.path("no-such-model")
    argv, data = _train(c, "--weights", f"local-dir:{folder}")
    return Scenario(argv, ["--weights", f"local-dir:{folder}", "does not exist", "local-dir:DIR"], keep=[data])


def benchmark_suite_traversal(c: Corpus) -> Scenario:
    return Scenario(["benchmark", "--suite", "../../etc", "--data-root", str(c.root), "--output", str(c.path("bench")),
                     "--no-mlflow", "--device", "cpu"],
                    ["--suite ../../etc", "not a dataset with few_shot hyper-parameters", "biomedical, natural",
                     "busi"])


def method_two(c: Corpus) -> Scenario:
    argv, data = _train(c, "--method", "svd,full")
    return Scenario(argv, ["'svd,full'", "--method", "choose from svd"], keep=[data])


def backbone_dotted(c: Corpus) -> Scenario:
    argv, data = _train(c, "--backbone", "os.path")
    return Scenario(argv, ["'os.path'", "--backbone", "registered backbones"], keep=[data])


def backbone_path(c: Corpus) -> Scenario:
    argv, data = _train(c, "--backbone", "../../etc/passwd")
    return Scenario(argv, ["'../../etc/passwd'", "--backbone", "registered backbones"], keep=[data])


# ------------------------------------------------------------- '..' after a symlinked folder (the time-out fix)
def _linked_folder(c: Corpus, data: Path) -> str:
    """``<data>/a/link`` -> ``outside/dir``: ``a/link/../secret.png`` is ``outside/secret.png`` for the kernel
    (it follows the link, then goes up), and ``data/a/secret.png`` for a check that collapses '..' first."""
    (c.outside / "dir").mkdir()
    (data / "a").mkdir()
    os.symlink(c.outside / "dir", data / "a" / "link")
    return "a/link/../secret.png"


def csv_dotdot_after_link(c: Corpus) -> Scenario:
    csv = c.csv_dataset()
    entry = _linked_folder(c, csv.parent)
    csv.write_text(csv.read_text() + f"{entry},benign,train\n")
    return Scenario(["data", "check", "--pipeline", "custom", "--data-root", str(csv)],
                    [str(csv), entry, "symlink", "leading outside the data root", "--follow-symlinks"],
                    forbidden=[c.outside], keep=[csv.parent])


def split_dotdot_after_link(c: Corpus) -> Scenario:
    data = c.class_folders()
    entry = _linked_folder(c, data)
    split = c.split_json({"train": [["benign/benign0.png", 0, "benign"], [entry, 1, "malignant"],
                                    ["malignant/malignant0.png", 1, "malignant"]], "val": [],
                          "test": [["benign/benign1.png", 0, "benign"], ["malignant/malignant1.png", 1, "malignant"]]})
    return Scenario(["data", "check", "--pipeline", "custom", "--data-root", str(data), "--split-file", str(split)],
                    [entry, "symlink", "leading outside the data root", "--follow-symlinks"],
                    forbidden=[c.outside], keep=[data, split])


def csv_nul_in_path(c: Corpus) -> Scenario:
    csv = c.csv_dataset()
    csv.write_text(csv.read_text().replace("img/benign0.png", "img/ben\0ign0.png"))
    return Scenario(["train", "--pipeline", "custom", "--data-root", str(csv), "--output", str(c.path("out")), *c.FAST],
                    [str(csv), "1 missing entries", "file not found", "--allow-missing"], keep=[csv.parent])


ROWS = [
    Row("weights-text-file", ITEM, "option validation", "`train --weights` a text file (/etc/passwd)",
        weights_text_file, issue=ISSUE),
    Row("weights-device", ITEM, "option validation", "`train --weights /dev/zero`", weights_device, issue=ISSUE),
    Row("weights-missing-local-dir", ITEM, "option validation", "`train --weights local-dir:` a missing folder",
        weights_missing_local_dir, issue=ISSUE),
    Row("benchmark-suite-traversal", ITEM, "option validation", "`benchmark --suite ../../etc`",
        benchmark_suite_traversal, issue=ISSUE),
    Row("csv-dotdot-after-symlink", ITEM, "root confinement", "CSV row `a/link/../secret.png`, `a/link` a symlink "
        "to a folder outside", csv_dotdot_after_link, issue=ISSUE),
    Row("split-dotdot-after-symlink", ITEM, "root confinement", "split-file entry `a/link/../secret.png`, `a/link` a "
        "symlink to a folder outside", split_dotdot_after_link, issue=ISSUE),
    Row("csv-nul-in-path", ITEM, "data: CSV", "CSV row whose path holds a NUL byte, `train`", csv_nul_in_path,
        issue=ISSUE),
    Row("method-two-names", ITEM, "option validation", "`train --method svd,full`", method_two, issue=ISSUE),
    Row("backbone-dotted-name", ITEM, "option validation", "`train --backbone os.path`", backbone_dotted,
        issue=ISSUE),
    Row("backbone-path", ITEM, "option validation", "`train --backbone ../../etc/passwd`", backbone_path,
        issue=ISSUE),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_row(row: Row, tmp_path):
    run_row(row, tmp_path)
    assert not (tmp_path / "out" / "adapter").exists(), "refused after training started"


# ------------------------------------------------------------------------------ what the rows cannot reach
def test_weights_text_file_content_is_never_shown(tmp_path):
    c = Corpus(tmp_path)
    out = run_cli(weights_text_file(c).argv)
    assert out.code == 2, out.text
    assert "root:x:0" not in out.text and "patient-list" not in out.text


def _weight_files(folder: Path) -> dict[str, Path]:
    """One real file of each format a --weights file may have, written by the libraries themselves."""
    import json

    import torch
    from safetensors.torch import save_file

    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    files = {"safetensors": folder / "model.safetensors", "torch-zip": folder / "model.bin",
             "torch-legacy": folder / "legacy.pt", "index": folder / "model.safetensors.index.json"}
    save_file(state, str(files["safetensors"]))
    torch.save(state, files["torch-zip"])
    torch.save(state, files["torch-legacy"], _use_new_zipfile_serialization=False)
    files["index"].write_text(json.dumps({"weight_map": {"w": "model.safetensors"}}))
    return files


def test_every_weights_format_passes_the_option_check(tmp_path):
    """The positive controls: the check refuses what no reader can read, never a file they read."""
    from medclipsvd.backbones.sources import read_state_dict
    from medclipsvd.backbones.weight_formats import weights_option_problem

    for kind, path in _weight_files(tmp_path).items():
        assert weights_option_problem(str(path)) is None, kind
        if kind != "index":
            assert read_state_dict(path)["w"].shape == (2, 3), kind  # and the reader does read it
    assert weights_option_problem(f"local-dir:{tmp_path}") is None
    assert weights_option_problem(str(tmp_path)) is None          # a model folder, looked into later
    assert weights_option_problem("hf-hub:org/repo") is None       # the hub is asked later, not here
    assert weights_option_problem("openai") is None                # an open_clip pretrained tag


def test_weights_option_refusals(tmp_path):
    from medclipsvd.backbones.weight_formats import weights_option_problem

    (tmp_path / "notes.safetensors").write_bytes(b"not really\n")
    (tmp_path / "empty.bin").write_bytes(b"")
    assert "is not a weights file" in weights_option_problem(str(tmp_path / "notes.safetensors"))
    assert "is not a weights file" in weights_option_problem(str(tmp_path / "empty.bin"))
    assert "does not exist" in weights_option_problem(str(tmp_path / "gone.safetensors"))
    assert "does not exist" in weights_option_problem("weights/model.pt")
    assert "names no folder" in weights_option_problem("local-dir:")


def test_benchmark_suites_that_exist_still_validate(tmp_path):
    """Positive controls for the --suite check: suites, names in any case, and every protocol's own suite."""
    from medclipsvd.errors import MedClipSVDError
    from medclipsvd.protocols.harness import BenchmarkSpec

    for suite, protocol in (("biomedical", "few_shot"), ("natural", "few_shot"), ("busi,CTKidney", "few_shot"),
                            ("biomedical", "base2new"), ("natural", "cross_dataset"),
                            ("natural", "domain_generalization")):
        BenchmarkSpec(suite=suite, protocol=protocol, shots=[1], seeds=[1], methods=["svd"], data_root=str(tmp_path),
                      output=str(tmp_path / "bench")).validate()
    with pytest.raises(MedClipSVDError, match=r"--suite BUSI,Nope: 'Nope' is not a dataset with few_shot"):
        BenchmarkSpec(suite="BUSI,Nope", shots=[1], seeds=[1], methods=["svd"], data_root=str(tmp_path),
                      output=str(tmp_path / "bench")).validate()
    with pytest.raises(MedClipSVDError, match=r"'BUSI' is not a dataset with base2new"):
        BenchmarkSpec(suite="BUSI", protocol="base2new", shots=[16], seeds=[1], methods=["svd"],
                      data_root=str(tmp_path), output=str(tmp_path / "bench")).validate()


def test_dataset_names_do_not_reach_yaml_outside_the_protocol_folder(tmp_path, monkeypatch):
    """A name such as '../../evil' was joined into configs/few_shot/../../evil.yaml and read when it existed."""
    import medclipsvd.engine.config as config
    from medclipsvd.engine.config import ConfigError, load_hparams

    configs = tmp_path / "repo" / "configs"
    (configs / "few_shot").mkdir(parents=True)
    (configs / "few_shot" / "busi.yaml").write_text("lr: 0.003\n")
    (tmp_path / "evil.yaml").write_text("lr: 0.5\n")  # configs/few_shot/../../../evil.yaml
    monkeypatch.setattr(config, "configs_dir", lambda: configs)
    assert load_hparams("few_shot", "BUSI").lr == 0.003
    with pytest.raises(ConfigError, match=r"no few_shot hyper-parameters for dataset '\.\./\.\./\.\./evil'"):
        load_hparams("few_shot", "../../../evil")
