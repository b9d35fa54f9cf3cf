"""What the three torch members share: standardised inputs, a minibatch training loop, safetensors I/O."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, Generic, Self, TypeVar

import numpy as np
import torch
from torch import nn

from fakescan.errors import DetectorError
from worker.detectors.ensemble.features import FeatureBank
from worker.detectors.ensemble.members import FitContext, Member

SCORE_BATCH = 1024
ModuleT = TypeVar("ModuleT", bound=nn.Module)


class Standardise(nn.Module):
    """Per-column (or per-channel) mean and spread of the training inputs, kept with the weights."""

    mean: torch.Tensor  # buffers, saved with the weights
    std: torch.Tensor

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))

    def set_from(self, values: torch.Tensor) -> None:
        self.mean.copy_(values.mean(dim=0))
        self.std.copy_(values.std(dim=0).clamp_min(1e-3))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / self.std


def train_minibatches(module: nn.Module, inputs: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                      context: FitContext, epochs: int, lr: float, desc: str, batch_size: int = 128) -> float:
    """Adam over shuffled minibatches; returns the last epoch's mean loss."""
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(context.seed)
    optimiser = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=1e-6)
    module.train()
    mean_loss = float("nan")
    bar = tqdm(range(epochs), desc=desc, leave=False, disable=not context.progress)
    for _ in bar:
        order = torch.randperm(len(inputs), generator=generator)
        losses = []
        for start in range(0, len(inputs), batch_size):
            batch = inputs[order[start:start + batch_size]].to(context.device)
            loss = loss_fn(batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        mean_loss = float(np.mean(losses))
        bar.set_postfix(loss=f"{mean_loss:.4f}")
    module.eval()
    return mean_loss


@torch.no_grad()
def score_in_batches(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, device: str,
                     batch_size: int = SCORE_BATCH) -> np.ndarray:
    parts = [fn(inputs[i:i + batch_size].to(device)).double().cpu() for i in range(0, len(inputs), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros(0)


class TorchMember(Member, Generic[ModuleT]):
    """A member whose state is one ``nn.Module`` built from ``config`` and saved as safetensors."""

    epochs: int = 20  # default; a "epochs" entry in the member config overrides it
    lr: float = 1e-3

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self._module: ModuleT | None = None
        self.device = "cpu"

    @property
    def module(self) -> ModuleT:
        if self._module is None:
            raise RuntimeError(f"member {self.name} is used before it was fitted or loaded")
        return self._module

    @module.setter
    def module(self, module: ModuleT) -> None:
        self._module = module

    @abstractmethod
    def build(self) -> ModuleT:
        """The untrained torch module of this member."""

    def tensor(self, bank: FeatureBank) -> torch.Tensor:
        return torch.from_numpy(self.inputs(bank))

    def fit(self, bank: FeatureBank, context: FitContext) -> None:
        inputs = self.tensor(bank)
        self.prepare(inputs, context)
        torch.manual_seed(context.seed)
        self.module = self.build().to(context.device)
        self.initialise(inputs.to(context.device))
        epochs = int(self.config.setdefault("epochs", self.epochs))
        self.config["final_loss"] = train_minibatches(self.module, inputs, self.loss, context, epochs, self.lr,
                                                      desc=self.name)

    def initialise(self, inputs: torch.Tensor) -> None:
        """Data-dependent buffers set before training (by default the input standardisation)."""
        standardise = self.module.get_submodule("standardise")
        if not isinstance(standardise, Standardise):
            raise TypeError(f"{type(self.module).__name__} has no Standardise; {self.name} must override initialise")
        standardise.set_from(inputs)

    @abstractmethod
    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The training loss of one mini-batch."""

    def prepare(self, inputs: torch.Tensor, context: FitContext) -> None:
        """Record the input width (the module is built from config) and where training runs."""
        self.config.setdefault("width", int(inputs.shape[1]))
        self.device = context.device

    def save(self, folder: Path) -> list[str]:
        name = f"{self.name}.safetensors"
        save_state(self.module, folder / name)
        return [name]

    @classmethod
    def load(cls, folder: Path, config: dict[str, Any], device: str) -> Self:
        member = cls(config)
        member.device = device
        module = member.build()
        load_state(module, folder / f"{cls.name}.safetensors")
        member.module = module.to(device).eval()
        return member


def save_state(module: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}, str(path))


def load_state(module: nn.Module, path: Path) -> None:
    """Weights and buffers from a safetensors file, every key required (DetectorError when refused)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        module.load_state_dict(load_file(str(path)))
    except (OSError, SafetensorError, RuntimeError) as error:
        raise DetectorError(f"cannot load {path.name}: {str(error).splitlines()[0]}") from None
