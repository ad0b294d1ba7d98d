"""FSDP's shards and whole weights: what the penalties and the saved model need of them.

Whole tensors laid out as one rank's shard (L2-SP's anchor, EWC's Fisher), and the whole
state dict gathered from the shards (the model a stage saves and scores).

Under FSDP (transformers' `fsdp` training argument, FSDP1), each wrapped module keeps its
parameters as one flat parameter of which a rank holds a 1-D slice; a penalty that compares
the weights with a whole copy must compare that slice with the matching slice of the copy.
torch has no public call that maps a whole parameter to its place in a rank's shard (the
public `shard_metadata()` leaves out the offsets within the shard), so this reads the two
attributes FSDP itself uses for that, `_fqns` and `_shard_param_infos` (stable since torch
2.1; tests/test_distributed.py fails if they change).
"""

from __future__ import annotations

import os

import torch
from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig

from factmem.distributed import world_size

_WRAPPERS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def flat_shards(model: torch.nn.Module) -> list[tuple[torch.nn.Parameter, list]]:
    """(flat parameter, [(whole parameter name, shard info)]) for every FSDP unit of `model`;
    empty when the model is not sharded."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    units = []
    for path, module in model.named_modules():
        if isinstance(module, FullyShardedDataParallel) and module._handle is not None:
            flat = module._handle.flat_param
            prefix = _unwrapped(path)
            names = [f"{prefix}.{fqn}" if prefix else fqn for fqn in flat._fqns]
            units.append((flat, list(zip(names, flat._shard_param_infos, strict=True))))
    return units


def local_slice(flat: torch.Tensor, pieces: list, whole: dict[str, torch.Tensor]) -> torch.Tensor:
    """`whole` (full tensors keyed by parameter name) laid out like this rank's shard of
    `flat`, in fp32; zero where the shard holds padding."""
    out = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
    for name, info in pieces:
        if not info.in_shard:
            continue
        if name not in whole:
            raise KeyError(f"the sharded model's parameter {name!r} has no whole copy "
                           f"(copies: {', '.join(list(whole)[:3])}, ...)")  # fmt: skip
        part = whole[name].flatten()[info.intra_param_start_idx : info.intra_param_end_idx + 1]
        start = info.offset_in_shard
        out[start : start + info.numel_in_shard] = part.to(out.device, torch.float32)
    return out


def _unwrapped(name: str) -> str:
    for wrapper in _WRAPPERS:
        name = name.replace(wrapper, "")
    return name.removesuffix("_fsdp_wrapped_module").rstrip(".")


def fsdp_launch() -> bool:
    """Whether this launch shards its stages with FSDP over several processes:
    `trainer_args.fsdp` (TrainingArguments exports it) or `accelerate launch --config_file`
    with an FSDP config both set ACCELERATE_USE_FSDP."""
    requested = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    return requested and world_size() > 1


def gathered_state_dict(wrapped: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict of an FSDP-wrapped model, on every rank, under the unwrapped
    model's names. Copied to the CPU from accelerators; on a CPU, not "offloaded": that
    frees storage the shards still use (see cpu_fsdp_plugin)."""
    from torch.distributed.fsdp import FullyShardedDataParallel, StateDictType

    on_cpu = all(p.device.type == "cpu" for p in wrapped.parameters())
    config = FullStateDictConfig(offload_to_cpu=not on_cpu, rank0_only=False)
    with FullyShardedDataParallel.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, config):
        return {k: v.detach().clone() for k, v in wrapped.state_dict().items()}


def cpu_fsdp_plugin():
    """accelerate's FSDP plugin (built from the FSDP_* variables), with full state dicts that
    stay where they are on a CPU. There FSDP's `offload_to_cpu` copies nothing (`.to("cpu")`
    is a no-op) and then frees the gathered storage the state dict still points at: a
    segfault on save (torch FSDP1; Lightning-AI/pytorch-lightning#21804). accelerate sets
    the flag to True before each checkpoint, and torch accepts only its own config classes,
    so the plugin hands out a fresh config with the flag off each time it is asked."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import StateDictType

    def kept_in_place(name: str, full_config: type) -> property:
        def get(plugin):
            if plugin.state_dict_type == StateDictType.FULL_STATE_DICT:
                return full_config(offload_to_cpu=False, rank0_only=True)
            return getattr(plugin, f"_{name}")

        return property(get, lambda plugin, value: setattr(plugin, f"_{name}", value))

    class CpuPlugin(FullyShardedDataParallelPlugin):
        state_dict_config = kept_in_place("state_dict_config", FullStateDictConfig)
        optim_state_dict_config = kept_in_place("optim_state_dict_config",
                                                FullOptimStateDictConfig)  # fmt: skip

    return CpuPlugin()
