"""Export the example generators in models/ to ONNX.

Run with Debian's python3 (apt-get install python3-torch python3-onnx):

    /usr/bin/python3 models/export.py

The .onnx files are committed, so tests and users need no Python. Every model has a dynamic batch
dimension named "batch". Weights come from fixed torch seeds, so re-running the script reproduces
the same files up to exporter version differences.
"""

import os

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 14  # BatchNormalization's training_mode attribute needs opset 14

# The quadratic form's matrix, stated here and in test/fixtures: G(z) = z^T A z, so H = A + A^T.
QUADRATIC_A = [
    [1.0, 2.0, 0.0, -1.0],
    [0.0, 3.0, 1.0, 0.0],
    [0.5, 0.0, -2.0, 1.0],
    [0.0, 1.0, 0.0, 1.0],
]


class DCGAN(nn.Module):
    """Linear -> 3 x (ConvTranspose, BatchNorm, LeakyReLU) -> ConvTranspose -> Tanh, 32x32 RGB."""

    def __init__(self, latents=12, width=32, cross=0.0, smooth=False):
        super().__init__()
        # smooth=True swaps LeakyReLU for SiLU: G is then twice differentiable everywhere, so
        # finite-difference Hessians converge (LeakyReLU's kinks make them grow like 1/epsilon).
        act = (lambda: nn.SiLU()) if smooth else (lambda: nn.LeakyReLU(0.2))
        self.cross = cross
        self.width = width
        self.fc = nn.Linear(latents, width * 2 * 4 * 4)
        self.block1 = nn.Sequential(
            nn.ConvTranspose2d(width * 2, width, 4, 2, 1), nn.BatchNorm2d(width), act()
        )
        self.block2 = nn.Sequential(
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1),
            nn.BatchNorm2d(width // 2),
            act(),
        )
        self.to_rgb = nn.ConvTranspose2d(width // 2, 3, 4, 2, 1)

    def forward(self, z):
        if self.cross:
            # Entangled variant for the release gate: every latent is mixed with z0.
            z = z + self.cross * z[:, :1] * torch.roll(z, 1, dims=1)
        h = self.fc(z).view(-1, self.width * 2, 4, 4)
        h = self.block1(h)
        h = self.block2(h)
        return torch.tanh(self.to_rgb(h))


class MLP(nn.Module):
    def __init__(self, latents=8, hidden=32, out=16, noise=0.0, batchnorm=False):
        super().__init__()
        self.noise = noise
        self.fc1 = nn.Linear(latents, hidden)
        self.norm = nn.BatchNorm1d(hidden) if batchnorm else nn.Identity()
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, out)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, z):
        h = self.act(self.norm(self.fc1(z)))
        if self.noise:
            # In-graph noise as in StyleGAN: exports a RandomNormalLike node.
            h = h + self.noise * torch.randn_like(h)
        h = self.act(self.fc2(h))
        return torch.tanh(self.fc3(h))


class Conditional(nn.Module):
    """z [N, 8], label int64 [N], truncation float [1] (no batch dimension)."""

    def __init__(self, latents=8, classes=10, hidden=32, out=16):
        super().__init__()
        self.embed = nn.Embedding(classes, latents)
        self.fc1 = nn.Linear(2 * latents, hidden)
        self.fc2 = nn.Linear(hidden, out)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, z, label, truncation):
        h = torch.cat([z * truncation, self.embed(label)], dim=1)
        return torch.tanh(self.fc2(self.act(self.fc1(h))))


class Cubic(nn.Module):
    """G(z) = [z0*z1, z0^2*z1]: per-layer penalties are exactly 4 and 16*max z0^2 in expectation."""

    def forward(self, z):
        z0, z1 = z[:, 0:1], z[:, 1:2]
        return z0 * z1, z0 * z0 * z1


class Quadratic(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("A", torch.tensor(QUADRATIC_A))

    def forward(self, z):
        return ((z @ self.A) * z).sum(dim=1, keepdim=True)


class Separable(nn.Module):
    """Each output is a sum of functions of single latents: the Hessian is diagonal."""

    def forward(self, z):
        a = torch.sin(z[:, 0:1]) + z[:, 1:2] ** 3 + torch.tanh(z[:, 2:3])
        b = z[:, 0:1] ** 2 - 0.5 * torch.cos(z[:, 1:2]) + z[:, 2:3] ** 3
        return torch.cat([a, b], dim=1)


class Ignoring(nn.Module):
    """Uses z0..z2 and ignores z3 entirely."""

    def forward(self, z):
        return torch.cat([z[:, 0:1] * z[:, 1:2], torch.tanh(z[:, 2:3]), z[:, 0:1] ** 2], dim=1)


class Log(nn.Module):
    """log(z): NaN for negative latents, to test how non-finite outputs are reported."""

    def forward(self, z):
        return torch.log(z)


class Linear(nn.Module):
    """G(z) = z W^T for a fixed W; columns orthogonal or correlated."""

    def __init__(self, weight):
        super().__init__()
        self.register_buffer("W", torch.tensor(weight))

    def forward(self, z):
        return z @ self.W.t()


def export(model, name, args, input_names, output_names, training=False):
    model.train(training)
    dynamic = {n: {0: "batch"} for n in input_names + output_names if n != "truncation"}
    path = os.path.join(HERE, name)
    torch.onnx.export(
        model,
        args,
        path,
        opset_version=OPSET,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic,
        training=torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL,
        do_constant_folding=not training,
    )
    print(f"{name}: {os.path.getsize(path)} bytes")


def randomize_batchnorm(model, gen):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
            m.weight.data.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


def main():
    gen = torch.Generator().manual_seed(1234)
    z12 = torch.randn(2, 12, generator=gen)
    z8 = torch.randn(2, 8, generator=gen)

    torch.manual_seed(0)
    dcgan = DCGAN()
    randomize_batchnorm(dcgan, gen)
    export(dcgan, "dcgan.onnx", (z12,), ["z"], ["image"])
    entangled = DCGAN(cross=0.5)
    entangled.load_state_dict(dcgan.state_dict())
    export(entangled, "dcgan_entangled.onnx", (z12,), ["z"], ["image"])

    torch.manual_seed(1)
    export(MLP(), "mlp.onnx", (z8,), ["z"], ["out"])
    torch.manual_seed(2)
    export(MLP(noise=0.1), "noisy.onnx", (z8,), ["z"], ["out"])
    torch.manual_seed(3)
    bn = MLP(batchnorm=True)
    export(bn, "bn_train.onnx", (z8,), ["z"], ["out"], training=True)

    torch.manual_seed(4)
    label = torch.tensor([3, 7], dtype=torch.int64)
    truncation = torch.tensor([0.7])
    export(
        Conditional(), "conditional.onnx", (z8, label, truncation), ["z", "label", "truncation"], ["out"]
    )

    export(Cubic(), "cubic.onnx", (torch.randn(2, 2, generator=gen),), ["z"], ["y0", "y1"])
    export(Quadratic(), "quadratic.onnx", (torch.randn(2, 4, generator=gen),), ["z"], ["y"])
    export(Separable(), "separable.onnx", (torch.randn(2, 3, generator=gen),), ["z"], ["y"])
    export(Ignoring(), "ignoring.onnx", (torch.randn(2, 4, generator=gen),), ["z"], ["y"])
    export(Log(), "log.onnx", (torch.rand(2, 2, generator=gen) + 0.5,), ["z"], ["y"])
    # Orthogonal columns: W^T W = diag(1, 4, 9). Correlated: columns 0 and 1 share a direction.
    orthogonal = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0]]
    correlated = [[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    z3 = torch.randn(2, 3, generator=gen)
    export(Linear(orthogonal), "linear_orthogonal.onnx", (z3,), ["z"], ["y"])
    export(Linear(correlated), "linear_correlated.onnx", (z3,), ["z"], ["y"])
    smooth_models()


def smooth_models():
    """Models added later, with their own seeds so the ones above are unchanged."""
    gen = torch.Generator().manual_seed(4321)
    torch.manual_seed(10)
    smooth = DCGAN(smooth=True)
    randomize_batchnorm(smooth, gen)
    export(smooth, "dcgan_smooth.onnx", (torch.randn(2, 12, generator=gen),), ["z"], ["image"])


if __name__ == "__main__":
    with torch.no_grad():
        main()
        __import__("export_archs").main()  # public architectures and their torch references (issue 15)
