"""MithrilCheckpointIO inside a real Lightning Trainer on the CPU: a checkpoint
written through the plugin is an .mcp, and fit(ckpt_path=...) resumes from it
bit-identically to an uninterrupted run."""
import pytest
import torch

lightning = pytest.importorskip("lightning")
from lightning.pytorch import LightningModule, Trainer, seed_everything  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

import mithril  # noqa: E402
from mithril.lightning import MithrilCheckpointIO  # noqa: E402


class Model(LightningModule):
    def __init__(self, width=16):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.7)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _loader():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    return torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)  # 6 steps per epoch


def _trainer(tmp_path, max_steps, callbacks=()):
    return Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=bool(callbacks), callbacks=list(callbacks),
                   default_root_dir=tmp_path, plugins=[MithrilCheckpointIO()])


def test_fit_checkpoint_and_resume_match_an_uninterrupted_run(tmp_path):
    # The uninterrupted run checkpoints through the plugin after its 6th step, the last
    # batch of epoch 0 (Lightning restarts a plain DataLoader's epoch on resume, so only
    # a checkpoint taken on an epoch's last batch can continue exactly) ...
    seed_everything(7)
    full = Model()
    every = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=6, save_top_k=-1)
    _trainer(tmp_path, 12, [every]).fit(full, _loader())
    ckpt = tmp_path / "ckpts" / "epoch=0-step=6.ckpt"
    assert ckpt.read_bytes()[:4] == b"\x89MCP"
    assert mithril.info(ckpt)["source_kind"] == "torch"
    state = mithril.load(ckpt)
    assert state["global_step"] == 6 and state["hyper_parameters"] == {"width": 16}
    assert "optimizer_states" in state and "lr_schedulers" in state and "loops" in state

    # ... and a fresh process-like run resumed from it ends where the uninterrupted one did.
    seed_everything(123)  # the resume must not depend on fresh initialisation
    resumed = Model()
    _trainer(tmp_path / "resumed", 12).fit(resumed, _loader(), ckpt_path=ckpt)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert not torch.equal(Model().net[0].weight, resumed.net[0].weight)


def test_remove_and_missing(tmp_path):
    io = MithrilCheckpointIO()
    io.save_checkpoint({"w": torch.ones(2), "epoch": 1}, tmp_path / "a" / "x.ckpt")
    assert io.load_checkpoint(tmp_path / "a" / "x.ckpt")["epoch"] == 1
    io.remove_checkpoint(tmp_path / "a" / "x.ckpt")
    assert not (tmp_path / "a" / "x.ckpt").exists()
    with pytest.raises(FileNotFoundError, match="x.ckpt"):
        io.load_checkpoint(tmp_path / "a" / "x.ckpt")
