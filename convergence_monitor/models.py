"""Build one network per seed by architecture name, from timm or torchvision."""

from __future__ import annotations

import torch
from torch import nn

TORCHVISION_PREFIX = "torchvision."


def build_model(arch: str, *, num_classes: int, in_chans: int, seed: int, **kwargs) -> nn.Module:
    """Create an untrained ``arch`` whose initial weights depend only on ``seed``.

    Names are timm model names (``resnet10t``, ``vit_tiny_patch16_224``, ...);
    a ``torchvision.`` prefix selects torchvision's builder instead
    (``torchvision.resnet18``). No pretrained weights are ever loaded.
    The global RNG state is saved and restored, so building models does not
    shift any other random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch.startswith(TORCHVISION_PREFIX):
            return _build_torchvision(arch[len(TORCHVISION_PREFIX):], num_classes, in_chans, **kwargs)
        return _build_timm(arch, num_classes, in_chans, **kwargs)


def _build_timm(name: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:10]
        raise ValueError(f"unknown timm architecture {name!r}; similar names: {close}")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _build_torchvision(name: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models():
        raise ValueError(f"unknown torchvision architecture {name!r}; see torchvision.models.list_models()")
    if in_chans != 3:
        raise ValueError(
            f"torchvision architectures take 3-channel input, got in_chans={in_chans}; "
            "use a timm architecture, which adapts its stem to any channel count"
        )
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)


def classifier_of(model: nn.Module) -> nn.Module:
    """Return the final classification layer, whose input is the pre-logits feature."""
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
            return head
    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Sequential) and len(head) > 0:
            head = head[-1]
        if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
            return head
    raise ValueError(
        f"cannot find the classification layer of {type(model).__name__}: expected get_classifier() "
        "or an 'fc', 'classifier', 'heads' or 'head' attribute"
    )
