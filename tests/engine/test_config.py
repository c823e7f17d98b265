"""Hyper-parameter configs equal the reference's (reference doc section 3); pipelines validate."""
from pathlib import Path

import pytest

from medclipsvd.engine.config import (ConfigError, HParams, configs_dir, list_pipelines, load_hparams,
                                      load_pipeline)

# (protocol, dataset, lr, train_epochs, weight_decay, layers, template)
REFERENCE = [
    ("few_shot", "BTMRI", 7e-3, 100, 0.0, "all", "a photo of a {}."),
    ("few_shot", "BUSI", 2e-3, 100, 0.0, "all", "a photo of a {}."),
    ("few_shot", "CHMNIST", 7e-3, 100, 0.0, "all", "a photo of a {}."),
    ("few_shot", "COVID_19", 5e-4, 100, 0.0, "all", "a chest xray of {}."),
    ("few_shot", "CTKidney", 1e-3, 200, 0.0, "all", "a photo of a {}."),
    ("few_shot", "KneeXray", 8e-3, 100, 0.0, "all", "a photo of a {}."),
    ("few_shot", "Kvasir", 5e-3, 100, 0.0, "all", "a photo of a {}."),
    ("few_shot", "LungColon", 3e-3, 100, 0.0, "all", "a photo of a {}."),
    ("few_shot", "OCTMNIST", 1e-2, 100, 0.0, "all", "a photo of a {}."),
    ("few_shot", "RETINA", 7e-3, 100, 0.0, "all", "a photo of a {}."),
    ("few_shot", "DTD", 5e-4, 20, 0.01, "all", "{} texture."),
    ("few_shot", "EuroSAT", 5e-4, 20, 0.01, "all", "a centered satellite photo of {}."),
    ("few_shot", "ImageNet", 5e-4, 2, 0.01, "all", "a photo of a {}."),
    ("base2new", "BTMRI", 9e-3, 100, 0.0, "all", "a photo of a {}."),
    ("base2new", "CHMNIST", 1e-3, 60, 0.0, "all", "a photo of a {}."),
    ("base2new", "COVID_19", 2e-3, 50, 0.0, "all", "a photo of a {}."),
    ("base2new", "CTKidney", 1e-2, 200, 0.0, "top_middle", "a photo of a {}."),
    ("base2new", "KneeXray", 2e-3, 60, 0.0, "all", "a photo of a {}."),
    ("base2new", "Kvasir", 3e-3, 60, 0.0, "all", "a photo of a {}."),
    ("base2new", "LungColon", 1e-2, 100, 0.0, "all", "a photo of a {}."),
    ("base2new", "OCTMNIST", 2e-2, 100, 0.0, "all", "a photo of a {}."),
    ("base2new", "RETINA", 2e-2, 60, 0.0, "all", "a photo of a {}."),
    ("base2new", "Food101", 4e-4, 10, 0.01, "all", "a photo of {}, a type of food."),
    ("base2new", "DTD", 4e-4, 20, 0.01, "all", "a photo of a {}."),
    ("base2new", "ImageNet", 4e-4, 10, 0.01, "all", "a photo of a {}."),
    ("cross_dataset", "Food101", 5e-4, 10, 0.01, "all", "a photo of {}, a type of food."),
    ("domain_generalization", "ImageNetV2", 5e-4, 2, 0.01, "all", "a photo of a {}."),
]


@pytest.mark.parametrize("protocol,dataset,lr,epochs,wd,layers,template", REFERENCE)
def test_reference_values(protocol, dataset, lr, epochs, wd, layers, template):
    hp = load_hparams(protocol, dataset)
    assert (hp.lr, hp.train_epochs, hp.weight_decay, hp.layers, hp.template) == (lr, epochs, wd, layers, template)
    assert hp.batch_size == 32


def test_every_config_file_validates_and_no_busi_base2new():
    files = sorted(configs_dir().glob("*/*.yaml"))
    assert len(files) == 21 + 20 + 11 + 5
    for f in files:
        load_hparams(f.parent.name, f.stem)
    with pytest.raises(ConfigError, match="no base2new hyper-parameters for dataset 'BUSI'"):
        load_hparams("base2new", "BUSI")


# (protocol, dataset, K, expected iterations) - reference doc section 2, "Iterations"
ITERATIONS = [("few_shot", "BUSI", k, it) for k, it in zip((1, 2, 4, 8, 16), (100, 100, 100, 100, 200))] + \
    [("few_shot", "CTKidney", k, it) for k, it in zip((1, 2, 4, 8, 16), (200, 200, 200, 200, 400))] + \
    [("few_shot", "CHMNIST", k, it) for k, it in zip((1, 2, 4, 8, 16), (100, 100, 100, 200, 400))] + \
    [("few_shot", "KneeXray", k, it) for k, it in zip((1, 2, 4, 8, 16), (100, 100, 100, 200, 300))] + \
    [("few_shot", "Caltech101", k, 200 * k) for k in (1, 2, 4, 8, 16)] + \
    [("cross_dataset", "ImageNet", 16, 3200)]
N_CLASSES = {"BUSI": 3, "CTKidney": 4, "CHMNIST": 8, "KneeXray": 5, "Caltech101": 100, "ImageNet": 1000}


@pytest.mark.parametrize("protocol,dataset,k,expected", ITERATIONS)
def test_iteration_counts(protocol, dataset, k, expected):
    hp = load_hparams(protocol, dataset)
    assert hp.total_iterations(n_train=k * N_CLASSES[dataset], shots=k) == expected


def test_reference_t_max():
    busi = load_hparams("few_shot", "BUSI")
    assert busi.scheduler_t_max(200, reference_schedule=True) == 100      # epochs, stepped per iteration
    assert busi.scheduler_t_max(200, reference_schedule=False) == 200
    clip = load_hparams("few_shot", "Caltech101")                         # CLIP few-shot: T_max = total
    assert clip.scheduler_t_max(3200, reference_schedule=True) == 3200


CLINICAL = {"chest_xray": "COVID_19", "brain_mri": "BTMRI", "breast_ultrasound": "BUSI",
            "colon_histology": "CHMNIST", "kidney_ct": "CTKidney", "knee_xray": "KneeXray", "endoscopy": "Kvasir",
            "lung_colon_histology": "LungColon", "retina_oct": "OCTMNIST", "retina_fundus": "RETINA"}


def test_pipelines():
    names = list_pipelines()
    assert set(CLINICAL) | {"custom", "demo"} <= set(names)
    assert sum(load_pipeline(n).suite == "natural" for n in names) == 11
    for n in names:
        p = load_pipeline(n)
        hp = p.method_hparams()  # resolves configs/<protocol>/<dataset>.yaml or inline values
        assert "{}" in hp.template
        if n in CLINICAL:
            assert p.dataset == CLINICAL[n] and p.backbone == "biomedclip"
            assert hp == load_hparams("few_shot", CLINICAL[n])
    assert load_pipeline("demo").backbone == "tiny-biomedclip"


@pytest.mark.parametrize("text,match", [
    ("name: x\n", "description"),
    ("[1, 2]", "mapping"),
    ("a: [", "not valid YAML"),
])
def test_bad_pipeline_files_name_the_file(tmp_path, text, match):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_pipeline(str(f))
    assert str(f) in str(e.value)


def test_unknown_pipeline_lists_known():
    with pytest.raises(ConfigError, match="breast_ultrasound"):
        load_pipeline("no_such_pipeline")


def test_hparams_validation():
    with pytest.raises(ValueError, match="layers"):
        HParams(layers="upper")
    with pytest.raises(ValueError, match="template"):
        HParams(template="no slot")
