"""Grow your own model: your residual CNN and your blueprint, grown on Fashion-MNIST by the heuristic.

    python examples/grow_your_own.py        # Fashion-MNIST from --data-dir, Debian's package or the HF cache
    python examples/grow_your_own.py --epochs 4 --train-size 2000 --out runs/mine

Everything a run needs to rebuild your parts is recorded by import path (`grow_your_own:residual_cnn`), so
`esper-run train --resume RUN_DIR` continues it from this folder (PYTHONPATH=examples), and `esper-run report`
draws it. The run directory is the CLI's: config.json, metrics.csv, events.jsonl, checkpoints/, report/.
"""

import argparse

import torch
from torch import nn

import esper


class Residual(nn.Module):
    """x ↦ relu(x + conv(relu(bn(conv(x))))): a plain residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def residual_cnn(generator: torch.Generator, channels: int = 16) -> nn.Sequential:
    """My network for 1×28×28 images, 10 classes; esper cuts it into segments at the slots given below."""
    return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
                         Residual(channels), nn.MaxPool2d(2),  # 14×14
                         Residual(channels), nn.MaxPool2d(2),  # 7×7
                         nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)))


class ChannelMix(nn.Module):
    """My blueprint: δ(h) = tanh(g) ⊙ conv1×1(h), one gate g per channel, zero at birth (g = 0)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mix = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.gate) * self.mix(h)


def channel_mix_params(channels: int) -> int:
    return channels * channels + 2 * channels  # the 1×1 conv's weight and bias, the gates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder of Fashion-MNIST's IDX files")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train-size", type=int, default=None, help="train images (default: all 60,000)")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<run id>)")
    args = parser.parse_args()

    # Registration checks the blueprint contract (identity at birth, parameter formula, isolation) first.
    catalogue = esper.register_blueprint(esper.catalogue_for("cnn"), "channel_mix", ChannelMix, channel_mix_params)
    summary = esper.train(host=residual_cnn, slots={"block1": 3, "block2": 5}, catalogue=catalogue,
                          task="fashion-mnist", data_dir=args.data_dir, epochs=args.epochs, train_size=args.train_size,
                          germination="early", min_germinate_epoch=1, out=args.out)
    for seed in summary.seeds:
        print(f"seed {seed.seed_id}: {seed.blueprint}, germinated at epoch {seed.germinated_epoch}, {seed.fate}")
    print(f"final val accuracy {summary.final_val_acc:.3f} with {summary.total_params} parameters")


if __name__ == "__main__":
    main()
