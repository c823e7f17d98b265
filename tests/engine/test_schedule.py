"""The default cosine decays once over the run; --reference-schedule reproduces the reference's sequence:
torch's CosineAnnealingLR(T_max=train_epochs, eta_min=1e-6) stepped every iteration."""
import math

import pytest
import torch

from medclipsvd.engine.schedule import lr_sequence, make_scheduler


def _lr_trace(lr, steps, make):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=lr)
    sch = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    return out


def _torch_reference(lr, t_max, steps, eta_min=1e-6):
    return _lr_trace(lr, steps, lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max,
                                                                                    eta_min=eta_min))


def _ours(lr, t_max, steps, eta_min=1e-6):
    return _lr_trace(lr, steps, lambda opt: make_scheduler(opt, t_max, eta_min))


@pytest.mark.parametrize("lr,epochs,iters", [(2e-3, 100, 200), (1e-3, 200, 400), (4e-4, 10, 250), (7e-3, 100, 300)])
def test_reference_schedule_matches_torch_stepped_per_iteration(lr, epochs, iters):
    ref = _torch_reference(lr, epochs, iters)
    ours = _ours(lr, epochs, iters)
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert lr_sequence(lr, epochs, iters) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    # the reference's oddity: minimum at iteration `epochs`, back at the peak at 2*epochs
    assert ours[epochs] == pytest.approx(1e-6)
    if iters > 2 * epochs:
        assert ours[2 * epochs] == pytest.approx(lr, rel=1e-9)


def test_default_schedule_decays_once():
    seq = _ours(2e-3, 200, 200)
    assert seq[0] == 2e-3
    assert all(a >= b for a, b in zip(seq, seq[1:]))
    assert seq[-1] < 2e-3 * 1e-3 + 1e-6
    assert seq[100] == pytest.approx(1e-6 + (2e-3 - 1e-6) / 2)


def test_scheduler_resume_exact():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-2)
    sch = make_scheduler(opt, 50)
    for _ in range(17):
        opt.step()
        sch.step()
    state_o, state_s = opt.state_dict(), sch.state_dict()
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    sch2 = make_scheduler(opt2, 50)
    opt2.load_state_dict(state_o)
    sch2.load_state_dict(state_s)
    for _ in range(5):
        opt.step(), sch.step(), opt2.step(), sch2.step()
        assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]
    assert not math.isnan(opt.param_groups[0]["lr"])
