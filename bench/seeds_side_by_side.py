"""Compare training 4 seeds in one MultiSeedModule with training one seed alone, in images per second.

    python bench/seeds_side_by_side.py            # 5 alternating repeats of 6 steps each
    python bench/seeds_side_by_side.py --quick    # 2 repeats of 4 steps

Both paths train resnet10t on synthetic 28 × 28 single-channel images with
batch 64 and ``data_order="shared"``, each in a fresh Trainer. Runs alternate
(4 seeds, 1 seed, 4 seeds, ...); a run's step time is the median of its
steps after the first. Images per second count every seed's images, so
4 seeds at 1.0 step/s process 4 × 64 images/s. The ratio above 1 means the
4-seed module does the same total work faster than 4 single-seed runs.

With CUDA, a third path stacks the 4 seeds' parameters with
``torch.func.stack_module_state`` and runs them with ``torch.func.vmap``,
and the script reports its speed-up over the loop and the largest output
difference. Without CUDA it still checks that the vmap ensemble returns the
loop's outputs, for a small MLP and for resnet10t in eval mode.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SyntheticDataModule, add_torch_threads_argument, load_average, median, start_run  # noqa: E402

from convergence_monitor import MultiSeedModule  # noqa: E402
from convergence_monitor.models import build_model  # noqa: E402

BATCH = 64


class StepTimer(pl.Callback):
    def __init__(self):
        self.seconds: list[float] = []
        self._started = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds.append(time.perf_counter() - self._started)


def images_per_second(seeds: list[int], steps: int) -> float:
    """Train ``seeds`` in one MultiSeedModule for ``steps`` steps and return images per second over all seeds."""
    module = MultiSeedModule(arch="resnet10t", seeds=seeds, in_chans=1, num_classes=10, lr_schedule="constant")
    data = SyntheticDataModule(steps_per_epoch=steps, size=28, num_seeds=len(seeds), batch_size=BATCH)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=root,
            max_steps=steps, callbacks=[timer],
        )
        trainer.fit(module, datamodule=data)

    # The first step allocates buffers and warms caches, so it is left out.
    return len(seeds) * BATCH / median(timer.seconds[1:])


def compare_loop(repeats: int, steps: int) -> None:
    print(f"\n4 seeds in one MultiSeedModule vs 1 seed alone (resnet10t, synthetic 28 x 28, batch {BATCH}, "
          f"{steps} steps per run, {repeats} alternating repeats)")
    ratios, together, alone = [], [], []
    for repeat in range(1, repeats + 1):
        together.append(images_per_second([0, 1, 2, 3], steps))
        alone.append(images_per_second([0], steps))
        ratios.append(together[-1] / alone[-1])
        print(f"    repeat {repeat}: 4 seeds {together[-1]:.0f} images/s, 1 seed {alone[-1]:.0f} images/s "
              f"(x 4 seeds: same rate, 4 x the time), ratio {ratios[-1]:.2f}, load {load_average()}")
    print(f"    median: 4 seeds {median(together):.0f} images/s, 1 seed {median(alone):.0f} images/s, "
          f"ratio {median(ratios):.2f}; load {load_average()}")


def vmap_ensemble(models: list[nn.Module]):
    """Return a function of a batch that runs every model with one vmapped call, shape (seeds, batch, ...)."""
    from torch.func import functional_call, stack_module_state, vmap

    parameters, buffers = stack_module_state(models)

    # A copy on the meta device gives the structure, and the stacked tensors give the values.
    skeleton = copy.deepcopy(models[0]).to("meta")

    def run_one(parameters, buffers, images):
        return functional_call(skeleton, (parameters, buffers), (images,))

    def forward(images: torch.Tensor) -> torch.Tensor:
        return vmap(run_one, in_dims=(0, 0, None))(parameters, buffers, images)

    return forward


def loop_ensemble(models: list[nn.Module]):
    def forward(images: torch.Tensor) -> torch.Tensor:
        return torch.stack([model(images) for model in models])

    return forward


def small_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


@torch.no_grad()
def check_vmap_outputs() -> None:
    print("\nvmap ensemble vs loop, outputs on the CPU")
    images = torch.randn(8, 1, 28, 28)
    cases = {
        "MLP 784-128-10": [small_mlp(seed) for seed in range(4)],
        "resnet10t (eval mode)": [build_model("resnet10t", num_classes=10, in_chans=1, seed=s).eval()
                                  for s in range(4)],
    }
    for name, models in cases.items():
        looped = loop_ensemble(models)(images)
        mapped = vmap_ensemble(models)(images)
        difference = float((looped - mapped).abs().max())
        scale = float(looped.abs().max())
        verdict = "equal" if torch.allclose(looped, mapped, rtol=1e-5, atol=1e-5 * scale) else "NOT EQUAL"
        print(f"    {name}: outputs {tuple(mapped.shape)}, max |vmap - loop| = {difference:.2e} "
              f"(max |output| {scale:.2e}): {verdict}")


def compare_vmap_on_gpu(repeats: int) -> None:
    # NOTE: never run, because no GPU was available. Only the CPU output check has been run.
    device = torch.device("cuda")
    print("\nvmap ensemble vs loop on CUDA (resnet10t, 4 seeds, eval mode, forward + backward, batch 64)")
    models = [build_model("resnet10t", num_classes=10, in_chans=1, seed=s).to(device).eval() for s in range(4)]
    images = torch.randn(BATCH, 1, 28, 28, device=device)
    paths = {"loop": loop_ensemble(models), "vmap": vmap_ensemble(models)}

    def timed(forward) -> float:
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(10):
            forward(images).sum().backward()
        torch.cuda.synchronize()
        return (time.perf_counter() - started) / 10

    with torch.no_grad():
        difference = float((paths["loop"](images) - paths["vmap"](images)).abs().max())
    ratios = []
    for _ in range(repeats):
        loop_seconds, vmap_seconds = timed(paths["loop"]), timed(paths["vmap"])
        ratios.append(loop_seconds / vmap_seconds)
    print(f"    median speed-up of vmap over loop {median(ratios):.2f}x, max |vmap - loop| = {difference:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats of 4 steps")
    parser.add_argument("--repeats", type=int, default=5, help="alternating repeats of both paths")
    parser.add_argument("--steps", type=int, default=6, help="training steps per run, the first one not timed")
    add_torch_threads_argument(parser, "torch intra-op threads (default: torch's own)")
    arguments = parser.parse_args()
    start_run(arguments.torch_threads)
    repeats, steps = (2, 4) if arguments.quick else (arguments.repeats, arguments.steps)

    compare_loop(repeats, steps)
    check_vmap_outputs()
    if torch.cuda.is_available():
        compare_vmap_on_gpu(repeats)
    else:
        print("\nvmap ensemble timing needs a GPU (torch.cuda.is_available() is False): skipped")


if __name__ == "__main__":
    main()
