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


def test_defaults_and_a_non_default_floor_match_torch():
    from medclipsvd.engine.schedule import cosine_lr

    assert cosine_lr(30, 2e-3, 30) == pytest.approx(1e-6, abs=1e-15)  # the documented default floor
    assert _lr_trace(2e-3, 40, lambda opt: make_scheduler(opt, 30)) == pytest.approx(_torch_reference(2e-3, 30, 40),
                                                                                     rel=1e-9, abs=1e-12)
    floor = 3e-4  # every function passes eta_min on
    ref = _torch_reference(2e-3, 30, 70, eta_min=floor)
    assert _ours(2e-3, 30, 70, eta_min=floor) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert lr_sequence(2e-3, 30, 70, eta_min=floor) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert min(ref) == pytest.approx(floor)


def test_t_max_of_one_is_allowed_and_zero_is_refused():
    assert _ours(1e-2, 1, 3) == pytest.approx(_torch_reference(1e-2, 1, 3), rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match=r"^t_max must be >= 1, got 0$"):
        _ours(1e-2, 0, 1)
