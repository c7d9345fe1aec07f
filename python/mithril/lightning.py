"""PyTorch Lightning plugin: checkpoints written and read by Mithril.

    from lightning.pytorch import Trainer
    from mithril.lightning import MithrilCheckpointIO

    trainer = Trainer(plugins=[MithrilCheckpointIO()])
    trainer.fit(model)                          # ModelCheckpoint files are .mcp containers
    trainer.fit(model, ckpt_path="last.ckpt")   # resumes from one

Every checkpoint Lightning saves (model, optimizer and scheduler states,
loops, callbacks, hyper-parameters) goes through :func:`mithril.save` as a
torch.save object and comes back through :func:`mithril.load`, which never
executes pickled code. Only local paths are supported. Requires the
``lightning`` package (imported here, not by ``import mithril``).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from ._dropin import load, save

__all__ = ["MithrilCheckpointIO"]


class MithrilCheckpointIO(CheckpointIO):
    """A Lightning ``CheckpointIO`` that compresses checkpoints losslessly.

    ``level`` (1..19, default 3) and ``threads`` (default all cores) as for
    :func:`mithril.save`; ``sync=True`` fsyncs each checkpoint before it
    appears (torch.save does not).
    """

    def __init__(self, level: Optional[int] = None, threads: Optional[int] = None, sync: bool = True) -> None:
        super().__init__()
        self.level = level
        self.threads = threads
        self.sync = sync

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(
                f"MithrilCheckpointIO.save_checkpoint does not take storage_options, got {storage_options!r}"
            )
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save(checkpoint, path, level=self.level, threads=self.threads, format="torch", sync=self.sync)

    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None, weights_only: Optional[bool] = None) -> Dict[str, Any]:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load(path, map_location=map_location, threads=self.threads)

    def remove_checkpoint(self, path: Any) -> None:
        path = os.fspath(path)
        if os.path.exists(path):
            os.remove(path)
