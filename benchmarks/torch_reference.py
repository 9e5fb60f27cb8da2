"""The original PyTorch network, as an external reference: eager PyTorch,
three separate nn.Conv2d per quadratic convolution (with biases), He-normal
kernels, option-A shortcuts, SGD with momentum 0.9 and weight decay 1e-4.

    python benchmarks/torch_reference.py --depth 20 --neuron quadratic
prints one JSON line with the median step time.
"""

import argparse
import json

import torch
import torch.nn.functional as F
from torch import nn

from common import peak_rss_mb
from common import time_steps


class QuadraticConv(nn.Module):
    """(conv_r(x)) * (conv_g(x)) + conv_b(x*x), as in the original code."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        conv = lambda: nn.Conv2d(cin, cout, 3, stride, 1, bias=True)  # noqa
        self.conv_r, self.conv_g, self.conv_b = conv(), conv(), conv()
        nn.init.kaiming_normal_(self.conv_r.weight)
        nn.init.zeros_(self.conv_g.weight)
        nn.init.ones_(self.conv_g.bias)
        nn.init.zeros_(self.conv_b.weight)
        nn.init.zeros_(self.conv_b.bias)

    def forward(self, x):
        return self.conv_r(x) * self.conv_g(x) + self.conv_b(x * x)


def conv3x3(cin, cout, stride, neuron):
    if neuron == "quadratic":
        return QuadraticConv(cin, cout, stride)
    conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    nn.init.kaiming_normal_(conv.weight)
    return conv


class Block(nn.Module):
    def __init__(self, cin, cout, stride, neuron):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride, neuron)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout, 1, neuron)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin
        self.stride = stride

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.pad:
            shortcut = F.pad(x[:, :, ::2, ::2],
                             (0, 0, 0, 0, self.pad // 2, self.pad // 2))
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    def __init__(self, depth, neuron, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(Block(cin, cout, stride if i == 0 else 1,
                                    neuron))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(64, num_classes)
        nn.init.kaiming_normal_(self.linear.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def reference_optimizer(model, lr=0.1, gamma=None, momentum=0.9,
                        weight_decay=1e-4, decay_quadratic=True):
    """The original's torch.optim.SGD: weight decay added to the gradient;
    with `gamma`, the gate and square convolutions (found by module type,
    not by name) in a group of their own at lr * gamma, as its ReLinear
    scripts; `decay_quadratic=False` leaves that group undecayed, as
    keras-quadratic does."""
    quadratic = []
    if gamma is not None:
        for module in model.modules():
            if isinstance(module, QuadraticConv):
                quadratic += [*module.conv_g.parameters(),
                              *module.conv_b.parameters()]
    ids = {id(p) for p in quadratic}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids]}]
    if quadratic:
        groups.append({"params": quadratic, "lr": lr * gamma,
                       "weight_decay": weight_decay if decay_quadratic
                       else 0.0})
    return torch.optim.SGD(groups, lr=lr, momentum=momentum,
                           weight_decay=weight_decay)


def training_step(depth, neuron, batch, dtype="float32", device="cpu",
                  channels_last=False, image_size=32):
    """The original training step on random data: (step, model). `step()`
    runs one SGD step (momentum 0.9, weight decay 1e-4) without waiting for
    the device."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = ResNet(depth, neuron).to(device, memory_format=fmt)
    optimizer = reference_optimizer(model)
    x = torch.randn(batch, 3, image_size, image_size, device=device).to(
        memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16,
                              enabled=dtype == "bfloat16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return step, model


def benchmark(depth, neuron, batch, steps, dtype="float32"):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_step, model = training_step(depth, neuron, batch, dtype, device)

    def step():
        train_step()
        if device == "cuda":
            torch.cuda.synchronize()

    seconds = time_steps(step, steps=steps)
    memory = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
              else peak_rss_mb())
    return {
        "backend": "pytorch-reference", "depth": depth, "neuron": neuron,
        "batch": batch, "dtype": dtype, "seconds": seconds,
        "peak_memory_mb": memory, "device": device,
        "params": sum(p.numel() for p in model.parameters()),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--neuron", choices=("quadratic", "linear"),
                   default="quadratic")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", choices=("float32", "bfloat16"),
                   default="float32")
    a = p.parse_args()
    print(json.dumps(benchmark(a.depth, a.neuron, a.batch, a.steps,
                               a.dtype)))
