"""Progress bars only on a terminal: with stderr redirected (a log file, CI) nothing is drawn."""
import io
import sys

from medclipsvd.io.progress import interactive, progress_bar


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not interactive()
    assert list(progress_bar(range(5), desc="x")) == list(range(5))
    assert sys.stderr.getvalue() == ""


def test_bar_on_a_terminal_and_off_when_asked(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert interactive()
    for _ in progress_bar(range(3), desc="work", file=tty):
        pass
    assert "work" in tty.getvalue()
    assert progress_bar(range(3), disable=True).disable


def test_training_on_a_redirected_stderr_draws_no_bar(tmp_path, capfd):
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline
    from medclipsvd.engine.run import run_experiment
    from medclipsvd.engine.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "data", patients_per_class=3, images_per_patient=1, size=32)
    spec = spec_from_pipeline("demo", data_root=str(root), output=str(tmp_path / "run"), backbone="tiny-clip",
                              device="cpu", max_steps=2, progress=True, shots=1)
    spec.plots = False
    run_experiment(spec)
    err = capfd.readouterr().err
    assert "step/s" not in err and "batch/s" not in err, err[-500:]
