"""Train the seeds of one run in several processes, each process (rank) owning a share of them.

``SeedPerRankStrategy`` is a Lightning strategy for that: rank ``r`` of
``W`` trains ``seeds[r::W]``. Seeds share no parameters, so nothing is
averaged between ranks: there is no ``DistributedDataParallel`` wrapper and
no weight broadcast. The processes exchange only

- per-seed training and validation losses and accuracies (one small
  ``all_gather`` per step, so every rank logs every seed's curve);
- probe features, so the callback can score seed pairs that live on
  different ranks (``gather_seed_results``);
- checkpoint contents, so a checkpoint contains every seed and has the
  same keys as a one-process checkpoint.

Each seed still sees the whole training set in the order a one-process run
gives it: the strategy turns Lightning's ``DistributedSampler`` off and the
datamodules draw each seed's batch order from its global seed index.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Mapping, Sequence

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightning_fabric.plugins import CheckpointIO, ClusterEnvironment
from lightning_fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning_fabric.utilities.apply_func import move_data_to_device
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DistributedSampler

STRATEGY_NAME = "seed_per_rank"

# State-dict key prefix of MultiSeedModule.models, which contains one network per seed. Keys read
# "models.<index>.<parameter>", where <index> counts the seeds of this process from 0.
SEED_MODULES_PREFIX = "models."

# Entries of a learning-rate scheduler's state that have one value per parameter group
# (torch.optim.lr_scheduler.LRScheduler). Every other entry is the same on every rank.
PER_GROUP_SCHEDULER_KEYS = ("base_lrs", "_last_lr")

_SEED_KEY = re.compile(r"^" + re.escape(SEED_MODULES_PREFIX) + r"(\d+)\.(.*)$", re.DOTALL)


def seed_indices_of_rank(num_seeds: int, rank: int, world_size: int) -> list[int]:
    """Return the indices into the run's seed list that process ``rank`` of ``world_size`` trains.

    Seeds go round-robin (``rank``, ``rank + world_size``, ...), so the ranks'
    shares differ in size by at most one seed.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return list(range(rank, num_seeds, world_size))


def local_seed_indices(trainer: pl.Trainer | None, num_seeds: int) -> list[int]:
    """Return the indices of the seeds this process trains: all of them unless the strategy is ``SeedPerRankStrategy``."""
    if trainer is None or not isinstance(trainer.strategy, SeedPerRankStrategy):
        return list(range(num_seeds))
    return seed_indices_of_rank(num_seeds, trainer.global_rank, trainer.world_size)


# ----------------------------------------------------------------- gathering


def gather_seed_values(values: torch.Tensor, num_seeds: int) -> torch.Tensor:
    """All-gather per-seed rows from every rank and return them for every seed of the run, in seed order.

    ``values`` has one row per seed this process trains, in the order of
    ``seed_indices_of_rank``, and the result has ``num_seeds`` rows on every
    rank. Every rank must call this. It runs one ``all_gather`` on the
    tensor's device, with each rank's rows padded up to the largest share.
    """
    world_size = dist.get_world_size()
    rank = dist.get_rank()
    expected = len(seed_indices_of_rank(num_seeds, rank, world_size))
    if values.shape[0] != expected:
        raise ValueError(
            f"rank {rank} of {world_size} trains {expected} of {num_seeds} seeds but values has "
            f"{values.shape[0]} rows; pass one row per seed in the order of seed_indices_of_rank()"
        )
    width = -(-num_seeds // world_size)
    padded = values.new_zeros((width, *values.shape[1:]))
    padded[:expected] = values
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)

    # Row j of rank r is global seed r + j * world_size, so interleaving the ranks' rows gives seed
    # order. Padding rows land at positions num_seeds and above, which the slice drops.
    return torch.stack(gathered, dim=1).flatten(0, 1)[:num_seeds]


def gather_seed_results(
    trainer: pl.Trainer,
    features: Mapping[str, Mapping[str, torch.Tensor]],
    accuracy: Mapping[str, float],
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, float]]:
    """All-gather every rank's probe features and accuracies and return them merged, in global seed order.

    ``features`` maps seed label to layer name to a feature matrix, and
    ``accuracy`` maps seed label to probe accuracy, for the seeds this process
    trains. Every rank must call this, from a hook that runs on every rank,
    and every rank gets the merged dictionaries back. Seeds are ordered by
    their index in the module's ``seed_indices`` (round-robin by rank when
    the module has none).

    Cost: ``all_gather_object`` pickles the features on the CPU, and every
    rank receives every seed's features, ``seeds × probe images × sum of
    layer widths`` numbers per probe set and probe step. That is small for
    probe sets of a few thousand images and ``max_units`` capped layers. For
    larger ones, gathering only to rank 0, or having each rank compute
    per-pair statistics (Gram or cross-covariance matrices) for the pairs it
    can form and gathering those, would move less data.
    """
    world_size = trainer.world_size
    rank = trainer.global_rank
    indices = getattr(trainer.lightning_module, "seed_indices", None)
    part = {
        "labels": list(features),
        "indices": list(indices) if indices is not None else None,
        "features": {label: {layer: value.detach().cpu() for layer, value in by_layer.items()}
                     for label, by_layer in features.items()},
        "accuracy": dict(accuracy),
    }
    parts: list[Any] = [None] * world_size
    dist.all_gather_object(parts, part)

    # Without explicit indices, rank r's j-th seed is global seed r + j * world_size.
    total = sum(len(p["labels"]) for p in parts)
    placed = []
    for r, p in enumerate(parts):
        ranks_indices = p["indices"] if p["indices"] is not None else seed_indices_of_rank(total, r, world_size)
        placed.extend(zip(ranks_indices, p["labels"], [r] * len(p["labels"])))
    labels = [label for _, label, _ in placed]
    if len(set(labels)) != len(labels):
        raise ValueError(f"seed labels must be unique across ranks, got {labels} (rank {rank} of {world_size})")

    merged_features: dict[str, dict[str, torch.Tensor]] = {}
    merged_accuracy: dict[str, float] = {}
    for _, label, r in sorted(placed):
        merged_features[label] = parts[r]["features"][label]
        if label in parts[r]["accuracy"]:
            merged_accuracy[label] = parts[r]["accuracy"][label]
    return merged_features, merged_accuracy


# ----------------------------------------------------------------- checkpoints


def merge_seed_checkpoints(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge the rank-local parts of a checkpoint into the layout of a one-process checkpoint.

    Each part has ``seed_indices`` (global index of each seed the rank
    trains, in local order) and any of ``state_dict``, ``optimizer_states``
    and ``lr_schedulers`` from that rank's Lightning checkpoint.
    Model keys ``models.<j>.*`` are renumbered to the global index, optimizer
    parameter groups (one per seed) and their state are put in global seed
    order with parameters renumbered, and per-group scheduler lists
    (``PER_GROUP_SCHEDULER_KEYS``) are merged the same way. Entries that are
    not per seed are taken from rank 0.
    """
    owners = _seed_owners(parts)
    merged: dict[str, Any] = {}
    if "state_dict" in parts[0]:
        merged["state_dict"] = _merge_state_dicts(parts, owners)
    if "optimizer_states" in parts[0]:
        merged["optimizer_states"] = [
            _merge_optimizer_states([p["optimizer_states"][k] for p in parts], owners)
            for k in range(len(parts[0]["optimizer_states"]))
        ]
    if "lr_schedulers" in parts[0]:
        merged["lr_schedulers"] = [
            _merge_scheduler_states([p["lr_schedulers"][k] for p in parts], owners)
            for k in range(len(parts[0]["lr_schedulers"]))
        ]
    return merged


def select_seed_checkpoint(checkpoint: Mapping[str, Any], seed_indices: Sequence[int],
                           num_seeds: int) -> dict[str, Any]:
    """Return a copy of a one-process-layout checkpoint that contains only the seeds at ``seed_indices``.

    The inverse of ``merge_seed_checkpoints`` for one rank: model keys,
    optimizer parameter groups and per-group scheduler lists are narrowed
    to those seeds and renumbered from 0 in the order of ``seed_indices``.
    Raises ``ValueError`` when the checkpoint contains another number of seeds
    than ``num_seeds``, because a rank would otherwise silently drop some.
    """
    selected = dict(checkpoint)
    if "state_dict" in checkpoint:
        local_of = {global_index: j for j, global_index in enumerate(seed_indices)}
        state_dict, found = {}, set()
        for key, value in checkpoint["state_dict"].items():
            match = _SEED_KEY.match(key)
            if match is None:
                state_dict[key] = value
                continue
            global_index = int(match.group(1))
            found.add(global_index)
            if global_index in local_of:
                state_dict[f"{SEED_MODULES_PREFIX}{local_of[global_index]}.{match.group(2)}"] = value
        if found != set(range(num_seeds)):
            raise ValueError(
                f"checkpoint mismatch: it contains networks for seed indices {sorted(found)}, but the module trains "
                f"{num_seeds} seeds; resume with the seeds the checkpoint was trained with"
            )
        selected["state_dict"] = state_dict
    if "optimizer_states" in checkpoint:
        for state in checkpoint["optimizer_states"]:
            _check_groups(state, num_seeds, "checkpoint")
        selected["optimizer_states"] = [_select_optimizer_state(state, seed_indices)
                                        for state in checkpoint["optimizer_states"]]
    if "lr_schedulers" in checkpoint:
        selected["lr_schedulers"] = [
            {key: ([value[i] for i in seed_indices] if key in PER_GROUP_SCHEDULER_KEYS else value)
             for key, value in scheduler_state.items()}
            for scheduler_state in checkpoint["lr_schedulers"]
        ]
    return selected


def _seed_owners(parts: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """Return ``(rank, local index)`` of every global seed, in global order."""
    owners = {}
    for rank, part in enumerate(parts):
        for j, global_index in enumerate(part["seed_indices"]):
            owners[int(global_index)] = (rank, j)
    found = sorted(int(i) for part in parts for i in part["seed_indices"])
    # Comparing the full list, not only the owners' keys, also rejects an index that two ranks share.
    if found != list(range(len(found))):
        raise ValueError(f"ranks train seed indices {found}, expected each of 0..{len(found) - 1} once")
    return [owners[i] for i in range(len(owners))]


def _merge_state_dicts(parts, owners) -> dict[str, Any]:
    by_seed: dict[tuple[int, int], list[tuple[str, Any]]] = {}
    others = {}
    for rank, part in enumerate(parts):
        for key, value in part["state_dict"].items():
            match = _SEED_KEY.match(key)
            if match is None:
                if rank == 0:
                    others[key] = value
                continue
            by_seed.setdefault((rank, int(match.group(1))), []).append((match.group(2), value))

    merged = {}
    for global_index, owner in enumerate(owners):
        for name, value in by_seed.get(owner, []):
            merged[f"{SEED_MODULES_PREFIX}{global_index}.{name}"] = value
    merged.update(others)
    return merged


def _check_groups(state: Mapping[str, Any], expected: int, where: str) -> None:
    found = len(state["param_groups"])
    if found != expected:
        raise ValueError(
            f"{where}: the optimizer has {found} parameter groups for {expected} seeds; SeedPerRankStrategy "
            "merges and splits optimizer state only for one parameter group per seed, as MultiSeedModule builds"
        )


def _merge_optimizer_states(states: Sequence[Mapping[str, Any]], owners) -> dict[str, Any]:
    for rank, state in enumerate(states):
        _check_groups(state, sum(1 for r, _ in owners if r == rank), f"rank {rank}")
    return _regroup(states[0], [(states[rank], j) for rank, j in owners])


def _select_optimizer_state(state: Mapping[str, Any], seed_indices: Sequence[int]) -> dict[str, Any]:
    return _regroup(state, [(state, i) for i in seed_indices])


def _regroup(base: Mapping[str, Any], groups: Sequence[tuple[Mapping[str, Any], int]]) -> dict[str, Any]:
    """Build an optimizer state from ``(state, group index)`` pairs, in order, renumbering parameters from 0."""
    param_groups, parameter_states = [], {}
    next_id = 0
    for state, index in groups:
        group = dict(state["param_groups"][index])
        new_ids = []
        for old_id in group["params"]:
            # Parameters that never had a gradient have no state entry.
            if old_id in state["state"]:
                parameter_states[next_id] = state["state"][old_id]
            new_ids.append(next_id)
            next_id += 1
        group["params"] = new_ids
        param_groups.append(group)
    return {**base, "state": parameter_states, "param_groups": param_groups}


def _merge_scheduler_states(states: Sequence[Mapping[str, Any]], owners) -> dict[str, Any]:
    merged = dict(states[0])
    for key in PER_GROUP_SCHEDULER_KEYS:
        if key in merged:
            merged[key] = [states[rank][key][j] for rank, j in owners]
    return merged


# ----------------------------------------------------------------- strategy


class SeedPerRankStrategy(DDPStrategy):
    """Run one process per device, each training its own share of the seeds: ``seeds[rank::world_size]``.

    Launching, cluster environments (local subprocesses, torchrun, SLURM)
    and process-group setup are those of Lightning's ``DDPStrategy``, with
    gloo on the CPU and nccl on CUDA devices. What differs:

    - the module is not wrapped in ``DistributedDataParallel`` and no
      weights are broadcast, because every rank trains different seeds;
    - the module must have ``shard_seeds(rank, world_size)`` (as
      ``MultiSeedModule`` does), which the strategy calls once the process
      group is up, before optimizers are built or a checkpoint is restored;
    - Lightning's ``DistributedSampler`` is turned off, so every seed sees
      the whole training set (and the whole validation set);
    - a saved checkpoint is gathered onto rank 0 and contains every seed's
      weights, optimizer state and scheduler state with the keys of a
      one-process checkpoint; restoring one gives each rank its own seeds,
      so a run may resume with another number of processes, or in one.

    Processes are started as Lightning's ``ddp`` strategy starts them
    (``start_method="popen"``: the script runs again once per extra
    device). ``spawn`` and ``fork`` are not offered because those launchers
    copy rank 0's module back into the main process, which would then contain
    only rank 0's seeds. ``Trainer(sync_batchnorm=True)`` is rejected because
    it would average batch-norm statistics across seeds.

    Use it as ``Trainer(strategy=SeedPerRankStrategy(), devices=N)``, as
    ``Trainer(strategy="seed_per_rank")`` once ``convergence_monitor`` is
    imported, or in YAML as ``trainer.strategy.class_path:
    convergence_monitor.distributed.SeedPerRankStrategy``.

    Args:
        process_group_backend: ``gloo``, ``nccl`` or ``None`` (nccl on CUDA
            devices, gloo otherwise).
        timeout: how long a collective may wait for the other ranks.
    """

    strategy_name = STRATEGY_NAME

    def __init__(
        self,
        accelerator: pl.accelerators.Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ):
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            checkpoint_io=checkpoint_io,
            precision_plugin=precision_plugin,
            process_group_backend=process_group_backend,
            timeout=timeout,
            start_method="popen",
        )

    def setup_environment(self) -> None:
        super().setup_environment()
        module = self.lightning_module
        shard_seeds = getattr(module, "shard_seeds", None)
        if not callable(shard_seeds):
            raise TypeError(
                f"SeedPerRankStrategy needs a LightningModule with seeds, seed_indices and shard_seeds(rank, world_size); "
                f"{type(module).__name__} has no shard_seeds(). Use convergence_monitor.MultiSeedModule, or the "
                "ddp strategy to train copies of one model"
            )
        shard_seeds(self.global_rank, self.world_size)

    def setup(self, trainer: pl.Trainer) -> None:
        if self._layer_sync is not None:
            raise ValueError(
                "SeedPerRankStrategy cannot use sync_batchnorm=True: it would average batch-norm statistics "
                "across different seeds; remove sync_batchnorm from the Trainer arguments"
            )
        self._turn_off_distributed_sampler(trainer)
        # Skip DDPStrategy.setup, which wraps the module in DistributedDataParallel when fitting and
        # broadcasts rank 0's weights otherwise: both would overwrite or mix different seeds.
        super(DDPStrategy, self).setup(trainer)

    @staticmethod
    def _turn_off_distributed_sampler(trainer: pl.Trainer) -> None:
        # NOTE: Lightning 2.x keeps Trainer(use_distributed_sampler=...) in this private connector
        # attribute (checked against 2.6). process_dataloader() below catches a sampler that slips through.
        connector = getattr(trainer, "_accelerator_connector", None)
        if connector is not None and getattr(connector, "use_distributed_sampler", False):
            connector.use_distributed_sampler = False
            rank_zero_info(
                "SeedPerRankStrategy: DistributedSampler turned off so that every seed sees the whole data set"
            )

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return the module unwrapped, because seeds share no parameters and have no gradients to average."""
        return model

    def process_dataloader(self, dataloader: object) -> object:
        if isinstance(getattr(dataloader, "sampler", None), DistributedSampler):
            raise RuntimeError(
                "SeedPerRankStrategy: a DataLoader has a DistributedSampler, so each seed would see only "
                f"1/{self.world_size} of the data; build the DataLoader without one and pass "
                "Trainer(use_distributed_sampler=False)"
            )
        return dataloader

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None) -> None:
        """Gather every rank's seeds onto rank 0 and write one checkpoint with a one-process layout.

        Every rank must call it, as ``Trainer.save_checkpoint`` and
        ``ModelCheckpoint`` do. Only rank 0 keeps every seed's state in CPU
        memory while writing.
        """
        part = {key: checkpoint[key] for key in ("state_dict", "optimizer_states", "lr_schedulers")
                if key in checkpoint}
        part = move_data_to_device(part, torch.device("cpu"))
        part["seed_indices"] = list(self.lightning_module.seed_indices)
        parts: list[Any] | None = [None] * self.world_size if self.is_global_zero else None
        dist.gather_object(part, parts, dst=0)
        if not self.is_global_zero:
            return
        merged = {**checkpoint, **merge_seed_checkpoints(parts)}
        self.checkpoint_io.save_checkpoint(merged, filepath, storage_options=storage_options)

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        """Read a checkpoint with a one-process layout and keep this rank's seeds."""
        checkpoint = super().load_checkpoint(checkpoint_path, weights_only=weights_only)
        module = self.lightning_module
        return select_seed_checkpoint(checkpoint, module.seed_indices, len(module.seeds))

    @classmethod
    def register_strategies(cls, strategy_registry) -> None:
        # Overridden so the DDP names that DDPStrategy registers keep pointing at DDPStrategy.
        if cls.strategy_name not in strategy_registry:
            strategy_registry.register(
                cls.strategy_name, cls, description="one process per device, each training its share of the seeds"
            )


SeedPerRankStrategy.register_strategies(StrategyRegistry)
