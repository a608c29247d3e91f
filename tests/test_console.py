"""A quiet console: nnU-Net's own output goes to a log file, ours stays (nnlandmark/nnunet/console.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from nnlandmark.nnunet import console
from nnlandmark.nnunet.console import captured, console_stream, nnunet_log

#: what nnU-Net prints while planning (its plans dictionary) and predicting on a CPU
NNUNET_PLANS_LINE = "3D fullres U-Net configuration:"
NNUNET_DEVICE_LINE = "perform_everything_on_device"


def _chatter():
    """nnU-Net's four ways of talking: print, sys.stderr, the file descriptors, a child process;
    and a warning raised outside nnlandmark."""
    print("python print")
    print("python stderr", file=sys.stderr)
    os.write(1, b"fd one\n")
    os.write(2, b"fd two\n")
    subprocess.run([sys.executable, "-c", "print('child process')"], check=True)
    warnings.warn_explicit("foreign warning", UserWarning, "/elsewhere/nnunetv2/thing.py", 1)


def test_captured_sends_every_kind_of_output_to_the_log_and_keeps_our_bar_on_the_console(tmp_path, capfd):
    log = tmp_path / "logs" / "nnunet.log"
    with nnunet_log(log), captured():
        _chatter()
        print("our bar", file=console_stream())
    print("after the block")
    out, err = capfd.readouterr()
    text = log.read_text()
    for line in ("python print", "python stderr", "fd one", "fd two", "child process", "foreign warning"):
        assert line in text
        assert line not in out + err
    assert "our bar" in err and "after the block" in out
    assert err.count(str(log)) == 1  # named once, on the console


def test_the_log_is_named_once_and_a_block_inside_a_block_is_one_block(tmp_path, capfd):
    log = tmp_path / "nnunet.log"
    with nnunet_log(log), nnunet_log(tmp_path / "inner.log") as inner:
        assert inner == log.resolve()  # the enclosing block's log wins
        for _ in range(2):
            with captured(), captured():
                print("nnU-Net talks")
    err = capfd.readouterr().err
    assert err.count(str(log)) == 1
    assert log.read_text() == "nnU-Net talks\n" * 2 and not (tmp_path / "inner.log").exists()


def test_our_warnings_are_shown_as_before_inside_the_block(tmp_path):
    """nnlandmark's own warnings reach whoever showed them before the block (the CLI's
    ``warning:`` lines; here pytest's recorder), not the log."""
    ours = console.__file__.replace(os.path.join("nnunet", "console.py"), os.path.join("training", "train.py"))
    with pytest.warns(UserWarning, match="our own warning"), nnunet_log(tmp_path / "nnunet.log"), captured():
        warnings.warn_explicit("our own warning", UserWarning, ours, 1)
        print("nnU-Net talks")
    assert "our own warning" not in (tmp_path / "nnunet.log").read_text()


def test_verbose_lets_nnunet_through_and_quiet_does_not_name_the_log(tmp_path, capfd):
    log = tmp_path / "nnunet.log"
    with console.at_verbosity(console.VERBOSE), nnunet_log(log), captured():
        print("nnU-Net talks")
    assert "nnU-Net talks" in capfd.readouterr().out and not log.exists()
    with console.at_verbosity(console.QUIET), nnunet_log(log), captured():
        print("nnU-Net talks")
    out, err = capfd.readouterr()
    assert out + err == "" and log.read_text() == "nnU-Net talks\n"
    assert console.verbosity() == console.NORMAL  # the block's level does not outlive it


def test_the_streams_are_restored_after_an_error(tmp_path, capfd):
    with pytest.raises(RuntimeError), nnunet_log(tmp_path / "nnunet.log"), captured():
        raise RuntimeError("a bug keeps its traceback")
    print("console again")
    os.write(2, b"fd two again\n")
    out, err = capfd.readouterr()
    assert "console again" in out and "fd two again" in err


def test_the_cli_takes_quiet_and_verbose_on_every_command():
    from nnlandmark.cli import build_parser
    parser = build_parser()
    assert parser.parse_args(["prepare", "data", "-p", "proj", "-q"]).quiet
    assert parser.parse_args(["predict", "-i", "a", "-o", "b", "-m", "c", "--verbose"]).verbose
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "proj", "-q", "-v"])


@pytest.mark.slow
def test_prepare_and_predict_keep_nnunets_output_off_the_console(synthetic_dataset, tiny_model, tmp_path, capfd):
    """``prepare`` (its console captured whole) shows no plans dictionary, the project's log has it;
    ``predict`` on a CPU shows no "perform_everything_on_device", its log has it."""
    from nnlandmark.cli import main
    project = tmp_path / "project"
    assert main(["prepare", str(synthetic_dataset), "-p", str(project), "-np", "1"]) == 0
    out, err = capfd.readouterr()
    log = project / "logs" / "nnunet.log"
    assert NNUNET_PLANS_LINE not in out + err and "'patch_size'" not in out + err
    assert NNUNET_PLANS_LINE in log.read_text() and "'patch_size'" in log.read_text()
    assert f"nnU-Net's messages: {log}" in err and f"prepared" in out

    assert main(["predict", "-i", str(synthetic_dataset / "images" / "case_000.nii.gz"), "-o",
                 str(tmp_path / "predictions"), "-m", str(tiny_model), "-q"]) == 0
    out, err = capfd.readouterr()
    assert NNUNET_DEVICE_LINE not in out + err and "nnU-Net's messages" not in err and "predictions in" in out
    assert NNUNET_DEVICE_LINE in console.current_log().read_text()


class _FakeTrainer:
    """What ``LandmarkTrainer._run_training`` uses of nnU-Net's trainer: epochs of 5 iterations whose
    count the time budget refits after each epoch to ``refits`` (the first one before training)."""

    def __init__(self, budget: float | None, refits):
        self.time_budget_s, self.refits = budget, list(refits)
        self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 5, 1
        self.num_epochs, self.current_epoch, self.local_rank, self.fold, self.stage = 1000, 0, 0, 0, "global"
        self.seconds, self.totals = [], []
        self.dataloader_train = self.dataloader_val = iter(int, 1)  # endless
        self.logger = type("Logger", (), {"get_value": lambda self, key, step: 0.5})()

    def _fit_to_budget(self):
        if self.time_budget_s is not None and self.seconds:
            self.num_epochs = self.refits.pop(0)

    def _epoch_seconds(self):
        return self.seconds

    def on_epoch_end(self):
        self.seconds.append(1.0)
        self.current_epoch += 1

    def train_step(self, batch):
        return {}

    validation_step = train_step

    def __getattr__(self, name):  # on_train_start, on_epoch_start, ...: nothing to do here
        return lambda *args: None


@pytest.mark.parametrize("budget, refits, expected", [
    (60.0, [4, 3, 3], [None, 20, 15, 15]),  # unknown until the budget first fits it
    (None, [], [10, 10]),  # a fixed schedule's total never changes
])
def test_the_training_bar_total_changes_only_when_the_budget_refits_it(monkeypatch, budget, refits, expected):
    import tqdm as tqdm_module
    from nnlandmark.nnunet import trainer as trainer_module

    class Bar(tqdm_module.tqdm):
        def __setattr__(self, name, value):
            if name == "total":
                shown.append(value)
            super().__setattr__(name, value)
    shown = []
    monkeypatch.setattr(trainer_module, "tqdm", Bar)
    fake = _FakeTrainer(budget, refits)
    if budget is None:
        fake.num_epochs = 2
    trainer_module.LandmarkTrainer._run_training(fake, progress=False)
    distinct = [t for i, t in enumerate(shown) if i == 0 or t != shown[i - 1]]
    assert distinct == [t for i, t in enumerate(expected) if i == 0 or t != expected[i - 1]]
    assert fake.current_epoch == fake.num_epochs
