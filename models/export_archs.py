"""Small exports of public generator architectures, with Hessian Penalty references from torch.

Run with Debian's python3 (apt-get install python3-torch python3-onnx), from the repository root:

    /usr/bin/python3 models/export_archs.py

Writes, next to this file:
  dcgan64.onnx           pytorch/examples dcgan Generator, 64x64 RGB (nz=100, ngf=16), z [N,100,1,1]
  vae_decoder.onnx       pytorch/examples vae decoder: z [N,20] -> relu(fc3) -> sigmoid(fc4) -> [N,784]
  stylegan2.onnx         StyleGAN2-style generator, whole: z [N,32] -> mapping -> "w" [N,32]
                         -> broadcast "ws" [N,11,32] (W+) -> synthesis -> "image" [N,3,32,32]
  stylegan2_synthesis.onnx  the same synthesis network alone: input "ws" [N,11,32] -> "image"
  archs_reference.json   seeded latents, explicit Rademacher directions and the penalty of each
                         case computed with the official hessian_penalty algorithm (PyTorch
                         reference: G(z+eps v) - 2G(z) + G(z-eps v) over k directions, unbiased
                         variance over directions, max over elements and samples), in float32 as
                         the reference runs it and in float64 for comparison.

The weights are seeded random initialisations, not trained ones: the architectures and the
numbers are what the tests check, so the files stay small and need no download.
"""

import copy
import json
import os

import onnx
import torch
from torch import nn
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 14


# --- pytorch/examples dcgan/main.py, Generator (nc=3), at 64x64 ---------------------------------
class DCGANGenerator(nn.Module):
    def __init__(self, nz=100, ngf=16, nc=3):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.main(z)


def dcgan_weights_init(m, gen):
    # As pytorch/examples' weights_init, from a seeded generator, except the conv weights' scale:
    # 0.02 makes an untrained G output almost 0 (tanh stays linear); He-style scaling keeps the
    # activations' scale, so the image lies in tanh's curved range as a trained G's does.
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        cin, _, kh, kw = m.weight.shape
        taps = kh * kw if m.stride[0] == 1 else kh * kw // (m.stride[0] * m.stride[1])
        m.weight.data.copy_((2.0 / (cin * taps)) ** 0.5 * torch.randn(m.weight.shape, generator=gen))
    elif name.find("BatchNorm") != -1:
        m.weight.data.copy_(1.0 + 0.02 * torch.randn(m.weight.shape, generator=gen))
        m.bias.data.zero_()
        # Non-trivial running statistics, so eval-mode BatchNorm is not the identity.
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


# --- pytorch/examples vae/main.py, the decoder half ---------------------------------------------
class VAEDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))


# --- StyleGAN2-style generator (after StyleGAN2-ADA's networks.py, fused_modconv=False) ----------
class Mapping(nn.Module):
    def __init__(self, z_dim=32, w_dim=32, layers=4):
        super().__init__()
        dims = [z_dim] + [w_dim] * layers
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, z):
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)  # pixel norm
        for fc in self.fcs:
            x = F.leaky_relu(fc(x), 0.2)
        return x


class ModulatedConv(nn.Module):
    """Style-modulated 3x3 (or 1x1) conv with optional demodulation, as a dynamic-batch graph:
    x * styles -> conv with the shared weight -> * demodulation coefficients."""

    def __init__(self, w_dim, cin, cout, kernel=3, demodulate=True, up=False, resolution=None):
        super().__init__()
        self.affine = nn.Linear(w_dim, cin)
        nn.init.ones_(self.affine.bias)  # styles start around 1, as in StyleGAN2
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel) / (cin * kernel * kernel) ** 0.5)
        self.bias = nn.Parameter(0.1 * torch.randn(cout))
        self.demodulate = demodulate
        self.up = up
        self.padding = kernel // 2
        if resolution is not None:
            # Fixed noise: StyleGAN's per-layer noise, drawn once and stored as a constant.
            self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))
            self.noise_strength = nn.Parameter(torch.tensor(0.1))
        else:
            self.noise = None

    def forward(self, x, w):
        styles = self.affine(w)  # [N, cin]
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = x * styles[:, :, None, None]
        x = F.conv2d(x, self.weight, padding=self.padding)
        if self.demodulate:
            wsq = self.weight.square().sum(dim=[2, 3])  # [cout, cin]
            dcoefs = torch.rsqrt(styles.square() @ wsq.t() + 1e-8)  # [N, cout]
            x = x * dcoefs[:, :, None, None]
        if self.noise is not None:
            x = x + self.noise_strength * self.noise
        x = x + self.bias[None, :, None, None]
        return F.leaky_relu(x, 0.2) if self.demodulate else x


class Synthesis(nn.Module):
    """4x4 constant -> blocks at 8, 16, 32 (skip architecture: RGB summed across resolutions).
    Every modulated layer reads its own row of ws [N, 11, w_dim] (W+)."""

    def __init__(self, w_dim=32, channels=32):
        super().__init__()
        self.const = nn.Parameter(torch.randn(1, channels, 4, 4))
        self.conv4 = ModulatedConv(w_dim, channels, channels, resolution=4)
        self.rgb4 = ModulatedConv(w_dim, channels, 3, kernel=1, demodulate=False)
        self.blocks = nn.ModuleList()
        for res in (8, 16, 32):
            self.blocks.append(
                nn.ModuleList(
                    [
                        ModulatedConv(w_dim, channels, channels, up=True, resolution=res),
                        ModulatedConv(w_dim, channels, channels, resolution=res),
                        ModulatedConv(w_dim, channels, 3, kernel=1, demodulate=False),
                    ]
                )
            )

    num_ws = 11

    def forward(self, ws):
        n = ws.shape[0]
        x = self.const.expand(n, -1, -1, -1)
        x = self.conv4(x, ws[:, 0])
        img = self.rgb4(x, ws[:, 1])
        i = 2
        for conv0, conv1, torgb in self.blocks:
            x = conv0(x, ws[:, i])
            x = conv1(x, ws[:, i + 1])
            img = F.interpolate(img, scale_factor=2.0, mode="bilinear", align_corners=False) + torgb(x, ws[:, i + 2])
            i += 3
        return torch.tanh(img)


class StyleGAN2(nn.Module):
    def __init__(self):
        super().__init__()
        self.mapping = Mapping()
        self.synthesis = Synthesis()

    def ws(self, w):
        return w[:, None, :].repeat(1, Synthesis.num_ws, 1)

    def forward(self, z):
        w = self.mapping(z)
        ws = self.ws(w)
        # w and ws are returned only so that the exporter gives those tensors their names;
        # they are removed from the graph outputs afterwards (see export_whole).
        return self.synthesis(ws), w, ws


# --- export ---------------------------------------------------------------------------------------
def export(model, name, args, input_names, output_names, keep_outputs=None):
    model.eval()
    path = os.path.join(HERE, name)
    torch.onnx.export(
        model,
        args,
        path,
        opset_version=OPSET,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes={n: {0: "batch"} for n in input_names + output_names},
        do_constant_folding=True,
    )
    if keep_outputs is not None:
        proto = onnx.load(path)
        kept = [o for o in proto.graph.output if o.name in keep_outputs]
        del proto.graph.output[:]
        proto.graph.output.extend(kept)
        onnx.checker.check_model(proto)
        onnx.save(proto, path)
    print(f"{name}: {os.path.getsize(path)} bytes")


def rademacher(shape, gen):
    return torch.randint(0, 2, shape, generator=gen).float() * 2 - 1


def hessian_penalty(G, z, xs, epsilon):
    """The official PyTorch reference (hessian_penalty_pytorch.py) with given directions: xs are
    the k Rademacher directions (k x shape of z), scaled by epsilon as the reference does."""
    G_z = G(z)
    second_orders = []
    for x in xs:
        x = epsilon * x
        second_orders.append((G(z + x) - 2 * G_z + G(z - x)) / epsilon**2)
    var = torch.var(torch.stack(second_orders), dim=0, unbiased=True)
    return var.max().item(), var.mean().item()


def case(name, G, G64, model_file, wrt, z, xs, epsilon=0.1, layer="image", groups=None, extra=None):
    """One reference: z and directions as flat lists (directions k x N x ...), and the penalty of
    G(z) in float32 (as the reference runs it) and of the float64 copy G64 of the network."""
    p32 = hessian_penalty(G, z, xs, epsilon)
    p64 = hessian_penalty(G64, z.double(), xs.double(), epsilon)
    out = {
        "name": name,
        "model": model_file,
        "wrt": wrt,
        "layer": layer,
        "epsilon": epsilon,
        "k": xs.shape[0],
        "shape": list(z.shape),
        "z": z.flatten().tolist(),
        "directions": xs.flatten().tolist(),
        "penalty_max": p32[0],
        "penalty_mean": p32[1],
        "penalty_max_float64": p64[0],
    }
    if groups is not None:
        out["groups"] = groups
    if extra:
        out.update(extra)
    return out


def main():
    gen = torch.Generator().manual_seed(2024)
    references = []

    torch.manual_seed(20)
    dcgan = DCGANGenerator()
    dcgan.apply(lambda m: dcgan_weights_init(m, gen))
    dcgan.eval()
    export(dcgan, "dcgan64.onnx", (torch.randn(2, 100, 1, 1, generator=gen),), ["z"], ["image"])
    z = torch.randn(3, 100, 1, 1, generator=gen)
    xs = rademacher((3, 3, 100, 1, 1), gen)
    references.append(case("dcgan64", dcgan, copy.deepcopy(dcgan).double(), "dcgan64.onnx", "z", z, xs))

    torch.manual_seed(21)
    vae = VAEDecoder().eval()
    export(vae, "vae_decoder.onnx", (torch.randn(2, 20, generator=gen),), ["z"], ["x"])
    z = torch.randn(4, 20, generator=gen)
    xs = rademacher((4, 4, 20), gen)
    references.append(case("vae_decoder", vae, copy.deepcopy(vae).double(), "vae_decoder.onnx", "z", z, xs, layer="x"))

    torch.manual_seed(22)
    sg = StyleGAN2().eval()
    z_example = torch.randn(2, 32, generator=gen)
    export(sg, "stylegan2.onnx", (z_example,), ["z"], ["image", "w", "ws"], keep_outputs={"image"})
    export(sg.synthesis, "stylegan2_synthesis.onnx", (sg.ws(sg.mapping(z_example)),), ["ws"], ["image"])

    sg64 = copy.deepcopy(sg).double()
    z = torch.randn(3, 32, generator=gen)
    xs = rademacher((3, 3, 32), gen)
    # In z-space the penalty is ~1000x smaller than in W: at eps 0.1 float32 rounding (a few ulp / eps^2)
    # is 3e-4 of it on either side, so this case uses eps 0.3 (rounding / 9).
    references.append(case("stylegan2_z", lambda t: sg(t)[0], lambda t: sg64(t)[0], "stylegan2.onnx", "z", z, xs, epsilon=0.3))
    w = sg.mapping(z)
    xw = rademacher((3, 3, 32), gen)
    references.append(
        case("stylegan2_w", lambda t: sg.synthesis(sg.ws(t)), lambda t: sg64.synthesis(sg64.ws(t)), "stylegan2.onnx", "w", w, xw, extra={"inputs_z": z.flatten().tolist()})
    )
    ws = sg.ws(w)
    xws = rademacher((3, 3, Synthesis.num_ws, 32), gen)
    references.append(case("stylegan2_ws", sg.synthesis, sg64.synthesis, "stylegan2_synthesis.onnx", "ws", ws, xws))
    # W+ with one group per style row: each row of ws shares one sign.
    signs = rademacher((3, 3, Synthesis.num_ws, 1), gen)
    references.append(
        case("stylegan2_ws_rows", sg.synthesis, sg64.synthesis, "stylegan2_synthesis.onnx", "ws", ws, signs.expand(-1, -1, -1, 32).contiguous(),
             groups="rows", extra={"group_signs": signs.flatten().tolist()})
    )

    with open(os.path.join(HERE, "archs_reference.json"), "w") as f:
        json.dump({"generated_by": "models/export_archs.py", "torch": torch.__version__, "cases": references}, f)
        f.write("\n")
    for r in references:
        print(f"{r['name']}: max {r['penalty_max']:.6g} mean {r['penalty_mean']:.6g} (float64 {r['penalty_max_float64']:.6g})")


if __name__ == "__main__":
    with torch.no_grad():
        main()
