"""Shared test setup: offline hubs, no W&B credentials, small thread counts."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
# The tests exercise the no-credentials fallback, so credentials from the
# developer's machine must not leak in.
os.environ.pop("WANDB_API_KEY", None)
os.environ.pop("WANDB_MODE", None)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """Run in a temporary directory with no netrc, so W&B finds no credentials."""
    return _isolate_home(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def isolated_home_module(tmp_path_factory):
    """``isolated_home`` shared by the tests of one module, for one training run they all read."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield _isolate_home(tmp_path_factory.mktemp("home"), monkeypatch)


def _isolate_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Lightning's offline WandbLogger writes WANDB_MODE into os.environ. Setting the variable before
    # deleting it makes monkeypatch record it, so teardown drops whatever value a test leaves behind.
    monkeypatch.setenv("WANDB_MODE", "")
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / ".cache" / "wandb"))
    return tmp_path
