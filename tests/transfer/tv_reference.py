"""Reference outputs from torchvision itself, for tests/transfer/test_torchvision_weights.py.

Run by Debian's system interpreter, which has python3-torchvision (0.14, on Debian's torch
1.13) -- never by deeparch's virtual environment, which cannot install torchvision:

    /usr/bin/python3 tests/transfer/tv_reference.py OUTDIR < cases.json

``cases.json`` is a list of ``{"case", "arch", "kwargs", "size", "seed", "hidden"}``. For
each case this builds ``torchvision.models.<arch>(weights=None, **kwargs)`` and makes every
tensor matter: random weights, random biases, random batch-norm scales and shifts, and
random running statistics (each BN's mean and variance measured on a batch of noise in
training mode, then shifted and scaled at random, so that eval-mode BN really normalises
with numbers of its own). ``hidden`` narrows the fully connected layers of AlexNet / VGG
(their 4096-wide FCs are most of the bytes and none of the mapping). It writes

    OUTDIR/<case>.pth      the state dict, with torch.save (torchvision's format)
    OUTDIR/<case>.io.pth   {"input", "output" (float32), "output64" (the same weights in
                           float64)} -- eval mode, a fixed random 2 x 3 x size x size input
    OUTDIR/manifest.json   torchvision's version and the seconds each case took
"""
import json
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

warnings.filterwarnings("ignore")


def build(arch, kwargs, hidden):
    """``torchvision.models.<arch>(weights=None, **kwargs)``; with ``hidden``, AlexNet's and
    VGG's 4096-wide FC layers are built ``hidden`` wide instead (their constructors say
    ``nn.Linear(..., 4096)``: a narrowing Linear stands in for torch.nn.Linear meanwhile,
    so that the 400 MB of the full layers are never even allocated)."""
    if not hidden:
        return getattr(torchvision.models, arch)(weights=None, **kwargs)

    class Narrow(nn.Linear):
        def __init__(self, n_in, n_out, *args, **kw):
            super().__init__(hidden if n_in == 4096 else n_in, hidden if n_out == 4096 else n_out,
                             *args, **kw)

    linear, nn.Linear = nn.Linear, Narrow
    try:
        return getattr(torchvision.models, arch)(weights=None, **kwargs)
    finally:
        nn.Linear = linear


def residual_closing_bns(model):
    """The BN that ends each residual branch. Trained networks keep these small (torchvision
    can even start them at zero: zero_init_residual), and so do the random ones here: with
    scales near 1 the residual stream's mean outgrows its spread through ResNet-152's 50
    units, and float32 loses 4e-4 of the logits to cancellation (1e-6 with 0.1..0.3)."""
    from torchvision.models.efficientnet import MBConv
    from torchvision.models.mobilenetv2 import InvertedResidual
    from torchvision.models.resnet import BasicBlock, Bottleneck

    for m in model.modules():
        if isinstance(m, BasicBlock):
            yield m.bn2
        elif isinstance(m, Bottleneck):
            yield m.bn3
        elif isinstance(m, MBConv):
            yield m.block[-1][1]
        elif isinstance(m, InvertedResidual):
            yield m.conv[-1]


def randomize(model, x, gen):
    """Random biases, BN scales and shifts, and BN running statistics that are random yet
    keep the network well conditioned: in one eval-mode pass over a batch of noise, each BN
    (in the order they run) takes the mean and variance of what reaches it -- through the
    BNs before it, already randomised -- shifted by up to +-0.3 std and the variance scaled
    by 0.5..2 at random, channel by channel. (Perturbing stats measured in one training-mode
    pass instead compounds through the depth: EfficientNet-B1's logits reached 1e3, where
    float32 itself is off by 2e-3 relative.)"""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def calibrate(bn, inputs):
        x = inputs[0]
        dims = [d for d in range(x.dim()) if d != 1]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        # a channel nearly constant over the batch (var << mean^2) would make BN divide a
        # cancellation by ~sqrt(eps): floor its variance at a tenth of its second moment
        var = torch.maximum(var, 0.3 * (x * x).mean(dims))
        shift = torch.empty(mean.shape).uniform_(-0.3, 0.3, generator=gen)
        bn.running_mean.copy_(mean + shift * var.sqrt())
        bn.running_var.copy_(var * torch.empty(var.shape).uniform_(0.5, 2.0, generator=gen))

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1, generator=gen)
        for m in bns:
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.normal_(0.0, 0.2, generator=gen)
            m.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (1,), generator=gen)))
        for bn in residual_closing_bns(model):
            bn.weight.uniform_(0.1, 0.3, generator=gen)
        model.eval()
        hooks = [m.register_forward_pre_hook(calibrate) for m in bns]
        model(torch.cat([x, torch.randn(6, *x.shape[1:], generator=gen)]))
        for h in hooks:
            h.remove()


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    cases = json.load(sys.stdin)
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    seconds = {}
    for c in cases:
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(c["seed"])
        torch.manual_seed(c["seed"])
        model = build(c["arch"], c.get("kwargs", {}), c.get("hidden"))
        x = torch.randn(2, 3, c["size"], c["size"], generator=gen)
        randomize(model, x, gen)
        torch.save(model.state_dict(), out / f"{c['case']}.pth")
        with torch.no_grad():
            y = model(x)
            y64 = model.double()(x.double())
        torch.save({"input": x, "output": y, "output64": y64}, out / f"{c['case']}.io.pth")
        seconds[c["case"]] = round(time.perf_counter() - t0, 2)
        print(f"{c['case']}: {seconds[c['case']]} s", file=sys.stderr, flush=True)
    (out / "manifest.json").write_text(json.dumps(
        {"torchvision": torchvision.__version__, "torch": torch.__version__,
         "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
