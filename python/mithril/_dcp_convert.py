"""Whole-state helpers: a Mithril DCP checkpoint as one full state_dict or
one safetensors file, in one process."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

import torch

from ._dcp_reader import Reader
from ._dcp_storage import PathLike, _load_metadata, _write_atomic
from .errors import ExistsError, InvalidArgumentError


def to_state_dict(path_or_url: PathLike, base: Optional[PathLike] = None) -> Dict[str, Any]:
    """Loads a whole checkpoint, in this process, into the full (unsharded)
    state_dict it was saved from: nested dicts of CPU tensors and values, as
    ``torch.distributed.checkpoint.format_utils.dcp_to_torch_save`` gives."""
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    from torch.distributed.checkpoint.api import CheckpointException

    _load_metadata(os.fspath(path_or_url))  # its errors, unwrapped
    state: Dict[str, Any] = {}
    try:
        _load_state_dict(state, storage_reader=Reader(path_or_url, base), planner=_EmptyStateDictLoadPlanner(),
                         no_dist=True)
    except CheckpointException as e:  # one process: its one failure, as raised
        for failure in e.failures.values():
            inner = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(inner, Exception):
                raise inner from None
        raise
    return state


def _flatten(value: Any, prefix: str, tensors: Dict[str, torch.Tensor], values: Dict[str, Any]) -> None:
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors, values)
    elif isinstance(value, (list, tuple)) and any(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), tensors, values)
    else:
        values[prefix] = value


def to_safetensors(path_or_url: PathLike, output: PathLike, base: Optional[PathLike] = None, *, overwrite: bool = False) -> Dict[str, str]:
    """Writes the whole checkpoint as one safetensors file: tensors under
    their dotted state_dict paths ("optim.state.fc.weight.exp_avg"), other
    values (step counters, param_groups) as JSON in the header's metadata.
    Returns that metadata. Written atomically; an existing ``output`` is
    replaced only with ``overwrite=True``."""
    import json

    from safetensors.torch import save as st_save

    out = os.fspath(output)
    if os.path.exists(out) and not overwrite:
        raise ExistsError(f"{out}: exists; pass overwrite=True to replace it")
    tensors: Dict[str, torch.Tensor] = {}
    values: Dict[str, Any] = {}
    _flatten(to_state_dict(path_or_url, base), "", tensors, values)
    try:
        header = {k: json.dumps(v) for k, v in values.items()}
    except TypeError as e:
        raise InvalidArgumentError(f"{os.fspath(path_or_url)}: a non-tensor value is not JSON-serialisable: {e}") from None
    _write_atomic(out, st_save({k: t.contiguous() for k, t in tensors.items()}, metadata=header), True)
    return header
