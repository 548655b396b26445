"""Choose layers and capture their activations on a probe set with forward hooks.

The unit of a layer is a channel. Outputs become samples × units matrices:

- convolution output (B, C, H, W): ``center`` takes the value at
  [H // 2, W // 2] (the default), ``mean`` averages over positions (global
  average pool), ``positions`` treats each image × position as a sample,
  subsampled to ``position_budget`` samples with a seeded generator that
  picks the same positions for every seed;
- transformer tokens (B, T, D): ``cls`` takes token 0, ``mean`` averages
  over tokens;
- (B, D) outputs are taken as they are.

A layer wider than ``max_units`` keeps a seeded random subset of
``max_units`` units (the same subset at every step), so a 200,000-unit layer
never forms 200,000 × 200,000 matrices in the metric core. Scores then
describe that unit subset, an estimate of the whole-layer score.

NOTE: unit indices do not correspond across seeds, so a kept unit's best
partner in another seed is kept only with probability max_units / width.
Permutation and soft-matching scores of a subsampled layer are therefore
biased low; linear regression, Procrustes and CKA are less affected.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
from typing import Iterator, Literal, Sequence

import numpy as np
import torch
from torch import nn

from .models import classifier_of

PRE_LOGITS = "pre_logits"
"""Pseudo layer name for the input of the final classification layer."""

SAMPLE_MODES = ("center", "mean", "positions")
TOKEN_MODES = ("cls", "mean")

# Convolutions off the main path of residual networks: their outputs are
# added to a block's output, so they duplicate the block rather than add a stage.
_SIDE_PATH_WORDS = ("downsample", "shortcut", "skip")


def _is_side_path(name: str) -> bool:
    return any(word in part for part in name.split(".") for word in _SIDE_PATH_WORDS)


def default_layers(model: nn.Module) -> list[str]:
    """Return the default layers: main-path convolutions (or transformer blocks) plus pre-logits.

    Transformers with a ``blocks`` list (timm ViT and friends) contribute one
    layer per block. Other networks contribute every ``Conv2d`` whose name
    has no side-path word (``downsample``, ``shortcut``, ``skip``).
    """
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks) > 0:
        names = [f"blocks.{i}" for i in range(len(blocks))]
    else:
        names = [
            name for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d) and not _is_side_path(name)
        ]
    return names + [PRE_LOGITS]


def resolve_layers(model: nn.Module, patterns: Sequence[str] | None) -> list[str]:
    """Expand layer names and glob patterns against the model, in forward-definition order.

    ``None`` selects ``default_layers``. A name or pattern that matches
    nothing raises ``ValueError`` listing the closest module names.
    """
    if patterns is None:
        return default_layers(model)
    available = [name for name, _ in model.named_modules() if name]
    chosen: list[str] = []
    for pattern in patterns:
        if pattern == PRE_LOGITS:
            matches = [PRE_LOGITS]
        else:
            matches = [name for name in available if fnmatch.fnmatchcase(name, pattern)]
        if not matches:
            close = difflib.get_close_matches(pattern, available + [PRE_LOGITS], n=5, cutoff=0.4)
            raise ValueError(
                f"layer {pattern!r} not found in {type(model).__name__}; closest module names: {close}"
            )
        chosen.extend(m for m in matches if m not in chosen)
    order = {name: i for i, name in enumerate(available)}
    return sorted(chosen, key=lambda name: order.get(name, len(order)))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own flag.

    Restoring per submodule (not ``model.train(previous)``) matters because
    users freeze parts of a network (for example BatchNorm layers) in eval
    mode while the rest trains.
    """
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags.items():
            module.training = flag


class _Reducer:
    """Turn one layer's output batch into a samples × units matrix."""

    def __init__(self, sample_mode: str, token_mode: str, position_budget: int, seed: int, n_images: int,
                 max_units: int | None = None):
        self.max_units = max_units
        self._unit_subsets: dict[int, torch.Tensor] = {}
        self.sample_mode = sample_mode
        self.token_mode = token_mode
        self.position_budget = position_budget
        self.seed = seed
        self.n_images = n_images
        self._positions: dict[tuple[int, int], torch.Tensor] = {}

    def _position_index(self, height: int, width: int) -> torch.Tensor:
        # One fixed draw per spatial shape: the same (image, position) samples for every seed and step.
        key = (height, width)
        if key not in self._positions:
            total = self.n_images * height * width
            size = min(self.position_budget, total)
            rng = np.random.default_rng((self.seed, height, width))
            self._positions[key] = torch.as_tensor(np.sort(rng.choice(total, size=size, replace=False)))
        return self._positions[key]

    def unit_subset(self, width: int) -> torch.Tensor:
        """Return the sorted unit indices kept for a layer of ``width`` units."""
        if width not in self._unit_subsets:
            rng = np.random.default_rng((self.seed, width, 1))
            self._unit_subsets[width] = torch.as_tensor(np.sort(rng.choice(width, size=self.max_units, replace=False)))
        return self._unit_subsets[width]

    def __call__(self, output: torch.Tensor, offset: int) -> torch.Tensor:
        matrix = self._to_matrix(output.detach(), offset)
        if self.max_units is not None and matrix.shape[1] > self.max_units:
            matrix = matrix[:, self.unit_subset(matrix.shape[1]).to(matrix.device)]
        return matrix

    def _to_matrix(self, output: torch.Tensor, offset: int) -> torch.Tensor:
        if output.ndim == 2:
            return output
        if output.ndim == 3:
            return output[:, 0] if self.token_mode == "cls" else output.mean(dim=1)
        if output.ndim != 4:
            raise ValueError(f"cannot reduce a layer output of shape {tuple(output.shape)} to samples × units")
        batch, channels, height, width = output.shape
        if self.sample_mode == "center":
            return output[:, :, height // 2, width // 2]
        if self.sample_mode == "mean":
            return output.mean(dim=(2, 3))
        # positions: keep the sampled (image, position) pairs that fall in this batch.
        index = self._position_index(height, width)
        start, stop = offset * height * width, (offset + batch) * height * width
        local = index[(index >= start) & (index < stop)] - start
        flat = output.permute(0, 2, 3, 1).reshape(-1, channels)
        return flat[local.to(flat.device)]


def _first_tensor(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"layer output of type {type(output).__name__} contains no tensor to capture")


@torch.no_grad()
def capture_features(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str],
    *,
    batch_size: int = 250,
    sample_mode: Literal["center", "mean", "positions"] = "center",
    token_mode: Literal["cls", "mean"] = "cls",
    position_budget: int = 4000,
    max_units: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run ``images`` through ``model`` and return ({layer: samples × units}, logits).

    Runs in eval mode without gradients and restores every submodule's
    train/eval flag, so BatchNorm statistics never learn from the probe set.
    Features keep the model's dtype and are returned on the CPU.
    """
    if sample_mode not in SAMPLE_MODES:
        raise ValueError(f"sample_mode must be one of {SAMPLE_MODES}, got {sample_mode!r}")
    if token_mode not in TOKEN_MODES:
        raise ValueError(f"token_mode must be one of {TOKEN_MODES}, got {token_mode!r}")
    if device is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    if max_units is not None and max_units < 2:
        raise ValueError(f"max_units must be at least 2 or None, got {max_units}")
    reducer = _Reducer(sample_mode, token_mode, position_budget, seed, int(images.shape[0]), max_units)
    modules = dict(model.named_modules())
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    offset = 0

    def record(layer: str, tensor: torch.Tensor) -> None:
        matrix = reducer(tensor, offset).cpu()
        # Copy whatever still shares the output's memory (the output itself, the centre position,
        # the class token): a later in-place operation such as ReLU(inplace=True) would overwrite
        # it, and a kept view would hold the whole output batch in memory until the capture ends.
        if matrix.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr():
            matrix = matrix.clone()
        chunks[layer].append(matrix)

    handles = []
    for layer in layers:
        if layer == PRE_LOGITS:
            head = classifier_of(model)
            handles.append(head.register_forward_pre_hook(
                lambda _m, args, layer=layer: record(layer, _first_tensor(args).flatten(1))))
        elif layer in modules:
            handles.append(modules[layer].register_forward_hook(
                lambda _m, _args, output, layer=layer: record(layer, _first_tensor(output))))
        else:
            raise ValueError(f"layer {layer!r} not found in {type(model).__name__}")

    logits = []
    try:
        with eval_mode(model):
            for start in range(0, images.shape[0], batch_size):
                batch = images[start:start + batch_size].to(device, non_blocking=True)
                offset = start
                logits.append(_first_tensor(model(batch)).detach().cpu())
    finally:
        for handle in handles:
            handle.remove()

    features = {}
    for layer in layers:
        if not chunks[layer]:
            raise RuntimeError(f"layer {layer!r} produced no output during the forward pass; is it used by forward()?")
        features[layer] = torch.cat(chunks[layer])
    return features, torch.cat(logits)
