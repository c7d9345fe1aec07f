"""A storage layer for ``torch.distributed.checkpoint`` (DCP) that compresses.

::

    import torch.distributed.checkpoint as dcp
    import mithril.dcp

    dcp.save(state, storage_writer=mithril.dcp.Writer("ckpt/step200"))
    dcp.save(state, storage_writer=mithril.dcp.Writer("ckpt/step300", base="ckpt/step200"))  # delta
    dcp.async_save(state, storage_writer=mithril.dcp.Writer("s3://bucket/run/step400"))
    dcp.load(state, storage_reader=mithril.dcp.Reader("ckpt/step200"))

DCP does the coordination (plans, resharding, async staging); Mithril is only
where the bytes go. Each rank codes the raw bytes of its own tensor shards,
straight from tensor memory, into its own container ``__{rank}_0.mcp``
(non-tensor items — step counters, RNG state — are stored byte for byte as
uint8 tensors in the same file); the coordinator writes DCP's ``.metadata``
last and atomically, so a checkpoint is complete or not there. Loading reads
from each rank file only the tensors (chunks) the loading rank needs, for any
number of ranks (resharding is DCP's). See docs/dcp.md.
"""
from __future__ import annotations

from ._dcp_convert import to_safetensors, to_state_dict
from ._dcp_reader import Reader
from ._dcp_storage import clean, is_checkpoint
from ._dcp_writer import Writer

__all__ = ["Writer", "Reader", "is_checkpoint", "clean", "to_state_dict", "to_safetensors"]
