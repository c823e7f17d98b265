"""Serving a trained model, without MLflow: `predictor` (paths/arrays -> class probabilities), `trained_run`
(the one reader of a `medclipsvd train` output folder and of a model configuration, and the one
load-and-merge), `inputs` (which inputs a served model accepts). The CLIP classification head itself is
`medclipsvd.backbones.head`. MLflow registration and the pyfunc wrapper live in `medclipsvd.tracking`."""
