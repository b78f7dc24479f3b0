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
    mlp: torch.nn.Module
    """A 3-class MLP (16 -> 64 -> 64 -> 3) trained on ``mlp_x`` / ``mlp_y``."""
    mlp_x: np.ndarray
    mlp_y: np.ndarray
    mlp_exported: Path
    mlp_script: Path

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
    mlp, mlp_x, mlp_y = _trained_mlp()
    example = (torch.from_numpy(mlp_x[:4]),)
    torch.export.save(
        torch.export.export(mlp, example, dynamic_shapes=({0: torch.export.Dim("batch")},)),
        root / "mlp.pt2",
    )
    torch.jit.script(mlp).save(str(root / "mlp.pt"))  # type: ignore[no-untyped-call]
    return TorchModels(
        module,
        x,
        scale,
        root / "model.pt2",
        root / "fixed.pt2",
        root / "model.pt",
        root / "weights.pt",
        root / "whole.pt",
        mlp,
        mlp_x,
        mlp_y,
        root / "mlp.pt2",
        root / "mlp.pt",
    )


def _trained_mlp() -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """An MLP wider than its task needs, as a pruning candidate: three Gaussian blobs."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 16)) * 2
    y = rng.integers(0, 3, 1200)
    x = (centers[y] + rng.standard_normal((1200, 16))).astype(np.float32)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(16, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 3),
    )
    optimizer = torch.optim.Adam(mlp.parameters(), lr=0.01)
    features, labels = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(mlp(features), labels).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return mlp.eval(), x, y.astype(np.int64)
