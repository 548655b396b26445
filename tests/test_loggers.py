import pytest

from convergence_monitor.loggers import resolve_wandb_mode, wandb_credentials_found


def test_no_credentials_means_offline(isolated_home):
    assert not wandb_credentials_found()
    assert resolve_wandb_mode() == "offline"


def test_api_key_means_online(isolated_home, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode() == "online"


def test_netrc_entry_means_online(isolated_home, monkeypatch):
    netrc = isolated_home / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_credentials_found()
    assert resolve_wandb_mode() == "online"


@pytest.mark.parametrize("mode", ["offline", "disabled", "online"])
def test_wandb_mode_variable_wins(isolated_home, monkeypatch, mode):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", mode)
    assert resolve_wandb_mode() == mode


def test_dryrun_mode_means_offline(isolated_home, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode() == "offline"
