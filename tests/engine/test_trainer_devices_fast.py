"""Where `train` puts its work on a GPU machine, checked on a CPU-only one (in-process, so mutation testing of
engine/trainer.py sees it; the real GPU and 2-process runs are subprocess or device tests).

CUDA is faked at its edges: `--device auto` resolves to CUDA (a GPU with bf16), and `Tensor.to`/`Module.to`
asked for a CUDA device record the device and stay on the CPU, marking the tensor they return with the device
it would be on.
The toy backbone records the mark of every input it is handed, cross-entropy that of the labels, and
`torch.autocast` the dtype it is entered with; DDP and the collectives are simulated as in
tests/engine/test_trainer_fast.py. What each test expects comes from the rules the trainer documents (a DDP
rank computes on `cuda:LOCAL_RANK`, `auto` is bf16 on a GPU with bf16, one loader worker per core but one on
CUDA, capped at 8), not from the trainer."""
import contextlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy import ToyBackbone  # noqa: E402

from medclipsvd.engine import trainer  # noqa: E402
from medclipsvd.engine.distributed import DistInfo  # noqa: E402
from medclipsvd.engine.trainer import TrainSettings, train  # noqa: E402

CLASSES = ["benign", "malignant", "normal"]
TEMPLATE = "a photo of a {} lesion."


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 8):
        g = torch.Generator().manual_seed(3)
        self.images = torch.randn(n, 3, 8, 8, generator=g)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % len(CLASSES)


def _is_cuda(x) -> bool:
    if isinstance(x, torch.device):
        return x.type == "cuda"
    return isinstance(x, str) and x.split(":")[0] == "cuda"


class FakeGpu:
    """The record of one run on a faked GPU machine (see the module docstring)."""

    def __init__(self, monkeypatch, dist: DistInfo, cores: int = 5):
        import torch.distributed as tdist
        import torch.nn.parallel

        import medclipsvd.data.workers as workers

        self.modules: list[tuple[str, str]] = []       # (module class, CUDA device it was moved to)
        self.tensors: list[tuple[tuple, str, bool]] = []  # (shape, CUDA device, non_blocking)
        self.encoded: list[tuple[str, str]] = []       # ("image"/"text", mark of the input)
        self.labels: list[str] = []                    # mark of the labels handed to cross-entropy
        self.autocasts: list[tuple[str, torch.dtype]] = []
        self.ddp: list[dict] = []
        self.loaders: list[dict] = []
        fake = self

        real_tensor_to, real_module_to = torch.Tensor.to, torch.nn.Module.to

        def tensor_to(self, *args, **kwargs):
            target = next((torch.device(a) for a in [*args, kwargs.get("device")] if _is_cuda(a)), None)
            args = tuple("cpu" if _is_cuda(a) else a for a in args)
            if _is_cuda(kwargs.get("device")):
                kwargs["device"] = "cpu"
            out = real_tensor_to(self, *args, **kwargs)
            if target is None:
                return out
            if out is self:  # a new object to carry the mark, sharing the data as a real move would not
                out = out.view_as(out)
            out.fake_device = str(target)
            fake.tensors.append((tuple(self.shape), str(target), bool(kwargs.get("non_blocking", False))))
            return out

        def module_to(self, *args, **kwargs):
            target = next((torch.device(a) for a in [*args, kwargs.get("device")] if _is_cuda(a)), None)
            if target is not None:
                fake.modules.append((type(self).__name__, str(target)))
            args = tuple("cpu" if _is_cuda(a) else a for a in args)
            if _is_cuda(kwargs.get("device")):
                kwargs["device"] = "cpu"
            return real_module_to(self, *args, **kwargs)

        real_ce = torch.nn.functional.cross_entropy

        def cross_entropy(logits, labels, *args, **kwargs):
            fake.labels.append(getattr(labels, "fake_device", "cpu"))
            return real_ce(logits, labels, *args, **kwargs)

        def autocast(device_type, dtype=None, **kwargs):
            fake.autocasts.append((device_type, dtype))
            return contextlib.nullcontext()

        class FakeDDP(torch.nn.Module):
            def __init__(self, module, **kwargs):
                super().__init__()
                self.module = module
                fake.ddp.append(kwargs)

            def forward(self, *args, **kwargs):
                return self.module(*args, **kwargs)

        real_loader = trainer.DataLoader

        def loader(dataset, **kwargs):
            fake.loaders.append(kwargs)
            # no worker processes and no pinning (there is no GPU to pin for) in this test
            return real_loader(dataset, **{**kwargs, "num_workers": 0, "pin_memory": False})

        def all_reduce(t):  # the other ranks' loss sums are 0
            pass

        import medclipsvd.device as device

        # the trainer's own view of the machine only: torch's optimisers would look for a real GPU otherwise
        monkeypatch.setattr(trainer, "resolve_device",
                            lambda asked: torch.device("cuda" if asked == "auto" else asked))
        monkeypatch.setattr(device, "_cuda_bf16", lambda dev: True)
        monkeypatch.setattr(torch.Tensor, "to", tensor_to)
        monkeypatch.setattr(torch.nn.Module, "to", module_to)
        monkeypatch.setattr(torch.nn.functional, "cross_entropy", cross_entropy)
        monkeypatch.setattr(torch, "autocast", autocast)
        monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", FakeDDP)
        monkeypatch.setattr(tdist, "all_reduce", all_reduce)
        monkeypatch.setattr(tdist, "barrier", lambda: None)
        monkeypatch.setattr(trainer, "dist_info", lambda: dist)
        monkeypatch.setattr(trainer, "DataLoader", loader)
        monkeypatch.setattr(workers, "available_cores", lambda: cores)
        monkeypatch.delenv(workers.MAX_WORKERS_ENV, raising=False)

    def backbone(self) -> ToyBackbone:
        fake = self

        class RecordingBackbone(ToyBackbone):
            def encode_image(self, x):
                fake.encoded.append(("image", getattr(x, "fake_device", "cpu")))
                return super().encode_image(x)

            def encode_text(self, tokens):
                fake.encoded.append(("text", getattr(tokens, "fake_device", "cpu")))
                return super().encode_text(tokens)

        return RecordingBackbone()


def _train(fake: FakeGpu, text_trainable=False, **kw):
    base = dict(lr=0.05, total_steps=2, t_max=2, batch_size=4, seed=5, device="auto", progress=False)
    bb = fake.backbone()
    params = bb.trainable() if text_trainable else {"img_sigma": bb.img_sigma}
    return train(bb, params, _Images(), CLASSES, TEMPLATE, TrainSettings(**{**base, **kw}),
                 text_trainable=text_trainable)


def test_a_ddp_rank_computes_on_the_gpu_of_its_local_rank(monkeypatch):
    """Rank 1 of two (LOCAL_RANK 1): the model, the prompts' tokens, every batch's images and labels
    go to cuda:1, batches with non-blocking copies; DDP is told that device."""
    fake = FakeGpu(monkeypatch, dist=DistInfo(rank=1, world_size=2, local_rank=1))
    result = _train(fake, amp="fp16")
    assert result.steps == 2
    assert fake.modules == [("RecordingBackbone", "cuda:1")]
    assert fake.ddp == [{"device_ids": [1], "broadcast_buffers": False}]
    assert fake.encoded == [("text", "cuda:1"), ("image", "cuda:1"), ("image", "cuda:1")]
    assert fake.labels == ["cuda:1", "cuda:1"]
    # each step: this rank's 2 images and 2 labels, copied without blocking; the tokens once, at the start
    batch_moves = [m for m in fake.tensors if m[0] in ((2, 3, 8, 8), (2,))]
    assert batch_moves == [((2, 3, 8, 8), "cuda:1", True), ((2,), "cuda:1", True)] * 2


def test_trainable_text_is_encoded_from_tokens_on_the_gpu_every_step(monkeypatch):
    fake = FakeGpu(monkeypatch, dist=DistInfo(rank=0, world_size=2, local_rank=0))
    _train(fake, text_trainable=True, amp="fp16")
    assert fake.ddp == [{"device_ids": [0], "broadcast_buffers": False}]
    assert fake.encoded == [("text", "cuda:0"), ("image", "cuda:0")] * 2


def test_one_process_keeps_the_device_it_resolved(monkeypatch):
    # without DDP there is no LOCAL_RANK to pick a GPU by: the run stays on "cuda" (the current device)
    fake = FakeGpu(monkeypatch, dist=DistInfo())
    _train(fake, amp="fp16")
    assert fake.modules == [("RecordingBackbone", "cuda")]
    assert fake.ddp == []
    assert fake.encoded == [("text", "cuda"), ("image", "cuda"), ("image", "cuda")]


@pytest.mark.parametrize("amp, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                        ("auto", torch.bfloat16)])
def test_every_forward_runs_under_cuda_autocast_in_the_planned_dtype(monkeypatch, amp, dtype):
    """The frozen text encoding and each step's forward; `auto` on a GPU with bf16 is bf16 (and recorded)."""
    fake = FakeGpu(monkeypatch, dist=DistInfo())
    result = _train(fake, amp=amp)
    assert fake.autocasts == [("cuda", dtype)] * 3
    assert result.precision == {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def test_fp32_enters_no_autocast(monkeypatch):
    fake = FakeGpu(monkeypatch, dist=DistInfo())
    result = _train(fake, amp="fp32")
    assert fake.autocasts == [] and result.precision == "fp32"


@pytest.mark.parametrize("cores, expected", [(5, 4), (20, 8)])
def test_the_loader_on_a_gpu_pins_memory_and_uses_a_worker_per_spare_core(monkeypatch, cores, expected):
    """docs: on CUDA, one worker per available core leaving one for the training process, at most 8."""
    fake = FakeGpu(monkeypatch, dist=DistInfo(), cores=cores)
    _train(fake, amp="fp16")
    (kw,) = fake.loaders
    assert (kw["num_workers"], kw["pin_memory"]) == (expected, True)
