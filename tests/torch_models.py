"""Small PyTorch programs saved every way servion reads (and refuses) them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class TorchModels:
    """One two-input model as TorchScript and torch.export files, plus what must be refused."""

    module: TwoHeads
    x: np.ndarray
    scale: np.ndarray
    exported: Path
    fixed_batch: Path
    script: Path
    state_dict: Path
    whole_pickle: Path

    def expected(self, x: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x), torch.from_numpy(scale))
        return {k: v.numpy() for k, v in out.items()}


class TwoHeads(torch.nn.Module):
    """Two inputs, two named outputs: what servion must name and batch correctly."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(8, 16)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.head(torch.relu(self.hidden(x))) * scale
        return {"probs": torch.softmax(logits, -1), "total": x.sum(1)}


def make_torch_models(root: Path) -> TorchModels:

    torch.manual_seed(0)
    module = TwoHeads().eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    scale = np.ones((4, 1), np.float32)
    args = (torch.from_numpy(x), torch.from_numpy(scale))
    batch = torch.export.Dim("batch", max=1024)
    dynamic = torch.export.export(
        module, args, dynamic_shapes={"x": {0: batch}, "scale": {0: batch}}
    )
    torch.export.save(dynamic, root / "model.pt2")
    torch.export.save(torch.export.export(module, args), root / "fixed.pt2")
    torch.jit.script(module).save(str(root / "model.pt"))  # type: ignore[no-untyped-call]
    torch.save(module.state_dict(), root / "weights.pt")
    torch.save(module, root / "whole.pt")
    return TorchModels(
        module,
        x,
        scale,
        root / "model.pt2",
        root / "fixed.pt2",
        root / "model.pt",
        root / "weights.pt",
        root / "whole.pt",
    )
