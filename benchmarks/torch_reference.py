"""PyTorch reference for the stage-1 step: the same networks and losses, timed on this machine.

PyTorch is NOT a dependency of deepwm_jax; install it on the side (benchmarks/README.md):

    python3 -m venv /work/torchvenv && /work/torchvenv/bin/pip install torch==2.13.0 numpy
    /work/torchvenv/bin/python benchmarks/torch_reference.py --json torch_ref.json

Without --image-size it runs the four PERFORMANCE.md configs (batch 8, grayscale):
64px ngf16 R32, 128px ngf16 R32, 64px ngf64 R128, 128px ngf64 R128. The networks follow
METHOD.md section 2 (embedder H = pix2pix U-Net, extractor R = dilated residual CNN,
discriminator D = PatchGAN); at paper scale (grayscale 256, ngf 64, R 128) their parameter
counts are asserted against the reference code's: H 41,823,873, R 3,366,145, D 1,554,433.
D's widths are 64-128-256-512 by default (--disc-channels scales the base width).
"""
import argparse
import json
import math
import os
import platform
import statistics
import time

# OpenMP's default spin-waiting collapses when another process shares the cores (a 64 px step
# took 10-14 s instead of 1.1 s on a busy 2-core machine); passive waiting costs little when
# the machine is quiet. Set before torch loads OpenMP; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # pylint: disable=wrong-import-position
from torch import nn  # pylint: disable=wrong-import-position
import torch.nn.functional as F  # pylint: disable=wrong-import-position

PAPER_COUNTS = {"embedder": 41_823_873, "extractor": 3_366_145, "discriminator": 1_554_433}
TABLE_CONFIGS = [  # (image_size, ngf, extractor_channels): PERFORMANCE.md's table
    (64, 16, 32), (128, 16, 32), (64, 64, 128), (128, 64, 128)]


# ---------------------------------------------------------------------------------------------
# Networks (NCHW, as the reference code)

class UnetBlock(nn.Module):
  """pix2pix UnetSkipConnectionBlock with BatchNorm (so convs carry no bias, except the
  outermost transposed conv)."""

  def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False,
               innermost=False):
    super().__init__()
    self.outermost = outermost
    input_nc = outer_nc if input_nc is None else input_nc
    down = nn.Conv2d(input_nc, inner_nc, 4, 2, 1, bias=False)
    if outermost:
      up = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1)
      layers = [down, submodule, nn.ReLU(True), up, nn.Sigmoid()]
    elif innermost:
      up = nn.ConvTranspose2d(inner_nc, outer_nc, 4, 2, 1, bias=False)
      layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, nn.BatchNorm2d(outer_nc)]
    else:
      up = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1, bias=False)
      layers = [nn.LeakyReLU(0.2, True), down, nn.BatchNorm2d(inner_nc), submodule,
                nn.ReLU(True), up, nn.BatchNorm2d(outer_nc)]
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    if self.outermost:
      return self.model(x)
    return torch.cat([x, self.model(x)], 1)


def embedder(channels, image_size, ngf):
  """H: U-Net with num_downs = log2(size) - 1; input (image, watermark), output image."""
  num_downs = int(math.log2(image_size)) - 1
  block = UnetBlock(ngf * 8, ngf * 8, innermost=True)
  for _ in range(num_downs - 5):
    block = UnetBlock(ngf * 8, ngf * 8, submodule=block)
  block = UnetBlock(ngf * 4, ngf * 8, submodule=block)
  block = UnetBlock(ngf * 2, ngf * 4, submodule=block)
  block = UnetBlock(ngf, ngf * 2, submodule=block)
  return UnetBlock(channels, ngf, input_nc=2 * channels, submodule=block, outermost=True)


def _conv_in_relu(cin, cout, k=3, stride=1, dilation=1, bias=False):
  pad = dilation * (k - 1) // 2
  return [nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=bias),
          nn.InstanceNorm2d(cout, affine=True), nn.ReLU(True)]


class ResBlock(nn.Module):
  def __init__(self, ch, dilation):
    super().__init__()
    self.body = nn.Sequential(
        *_conv_in_relu(ch, ch, dilation=dilation),
        nn.Conv2d(ch, ch, 3, 1, dilation, dilation=dilation, bias=False),
        nn.InstanceNorm2d(ch, affine=True))

  def forward(self, x):
    return F.relu(x + self.body(x))


def extractor(channels, ch):
  """R: three stem convs (the third stride 2), nine dilated residual blocks, back up."""
  return nn.Sequential(
      *_conv_in_relu(channels, ch), *_conv_in_relu(ch, ch), *_conv_in_relu(ch, ch, stride=2),
      *[ResBlock(ch, d) for d in (2, 2, 2, 2, 4, 4, 4, 4, 1)],
      nn.ConvTranspose2d(ch, ch, 4, 2, 1), nn.InstanceNorm2d(ch, affine=True), nn.ReLU(True),
      *_conv_in_relu(ch, ch, bias=True),
      nn.Conv2d(ch, channels, 1), nn.ReLU(True))


def discriminator(channels, base=64):
  """D: PatchGAN, four 3x3 stride-2 convs, InstanceNorm (no affine) on the last three."""
  widths = [base, 2 * base, 4 * base, 8 * base]
  layers, cin = [], channels
  for i, w in enumerate(widths):
    layers.append(nn.Conv2d(cin, w, 3, 2, 1))
    if i > 0:
      layers.append(nn.InstanceNorm2d(w))
    layers.append(nn.LeakyReLU(0.2, True))
    cin = w
  layers.append(nn.Conv2d(cin, 1, 3, 1, 1))
  return nn.Sequential(*layers)


def init_reference(module):
  """Conv weights N(0, 0.02), BatchNorm scale N(1, 0.02), biases 0 (METHOD.md section 2)."""
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(m.weight, 0.0, 0.02)
      if m.bias is not None:
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
      nn.init.normal_(m.weight, 1.0, 0.02)
      nn.init.zeros_(m.bias)


def count(module):
  return sum(p.numel() for p in module.parameters())


def check_paper_counts():
  got = {"embedder": count(embedder(1, 256, 64)), "extractor": count(extractor(1, 128)),
         "discriminator": count(discriminator(1))}
  assert got == PAPER_COUNTS, f"parameter counts {got} differ from the reference {PAPER_COUNTS}"
  return got


# ---------------------------------------------------------------------------------------------
# Stage-1 step (METHOD.md "Stage-1 losses")

def make_step(h, r, d, opt_hr, opt_d):
  mse = F.mse_loss

  def step(a, b, watermark, blank):
    batch = b.shape[0]
    marked = h(torch.cat([b, watermark.expand_as(b)], 1))
    # R sees B', A and B in one batch: InstanceNorm is per image, so this is the same function
    # as three calls, and what a fast implementation would do.
    extracted = r(torch.cat([marked, a, b], 0))
    r_marked, r_a, r_b = extracted.split(batch)
    half = batch // 2
    d_marked = d(marked)  # D's gradients from this pass are dropped before D's own step
    loss_h = 1e4 * mse(marked, b) + 0.01 * mse(d_marked, torch.ones_like(d_marked))
    loss_r = 1e4 * (mse(r_marked, watermark.expand_as(r_marked))
                    + mse(r_a, blank.expand_as(r_a)) + mse(r_b, blank.expand_as(r_b))
                    + mse(r_marked[:half], r_marked[half:]))
    opt_hr.zero_grad(set_to_none=True)
    (loss_h + loss_r).backward()
    opt_hr.step()
    d_real, d_fake = d(b), d(marked.detach())
    loss_d = 1e4 * 0.5 * (mse(d_real, torch.ones_like(d_real))
                          + mse(d_fake, torch.zeros_like(d_fake)))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return float(loss_h.detach() + loss_r.detach()), float(loss_d.detach())
  return step


def _median_step_seconds(step, args, warmup, steps):
  for _ in range(warmup):
    step(*args)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    step(*args)
    times.append(time.perf_counter() - t0)
  return statistics.median(times), min(times)


def matmul_peak_flops(n=2048, reps=5):
  """The machine's float32 matmul rate in this framework, for the fraction-of-peak column."""
  a, b = torch.randn(n, n), torch.randn(n, n)
  a @ b
  best = min(_timed(lambda: a @ b) for _ in range(reps))
  return 2 * n ** 3 / best


def _timed(fn):
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def step_flops(step, args):
  """FLOPs of one step as PyTorch's FlopCounterMode counts them (convs and matmuls)."""
  from torch.utils.flop_counter import FlopCounterMode
  counter = FlopCounterMode(display=False)
  with counter:
    step(*args)
  return counter.get_total_flops()


def bench_config(image_size, ngf, extractor_channels, batch, channels, disc_channels, warmup,
                 steps):
  torch.manual_seed(0)
  h, r = embedder(channels, image_size, ngf), extractor(channels, extractor_channels)
  d = discriminator(channels, disc_channels)
  for net in (h, r, d):
    init_reference(net)
    net.train()
  opt_hr = torch.optim.Adam(list(h.parameters()) + list(r.parameters()), 2e-4, betas=(0.5, 0.999))
  opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
  step = make_step(h, r, d, opt_hr, opt_d)
  shape = (batch, channels, image_size, image_size)
  a, b = torch.rand(shape), torch.rand(shape)
  watermark = (torch.rand((1,) + shape[1:]) > 0.5).float()
  blank = torch.ones((1,) + shape[1:])
  args = (a, b, watermark, blank)
  flops = step_flops(step, args)
  median_s, min_s = _median_step_seconds(step, args, warmup, steps)
  return {"name": f"stage1 {image_size}px ngf{ngf} R{extractor_channels}",
          "framework": "pytorch", "torch_version": torch.__version__,
          "threads": torch.get_num_threads(),
          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "image_size": image_size, "channels": channels,
          "ngf": ngf, "extractor_channels": extractor_channels, "disc_channels": disc_channels,
          "batch": batch, "s_per_step": median_s, "min_s_per_step": min_s,
          "steps_per_s": 1 / median_s, "images_per_s": batch / median_s, "flops": flops,
          "params": {"embedder": count(h), "extractor": count(r), "discriminator": count(d)}}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--image-size", type=int, default=None,
                 help="one config; without it, the four PERFORMANCE.md configs")
  p.add_argument("--ngf", type=int, default=64)
  p.add_argument("--extractor-channels", type=int, default=128)
  p.add_argument("--disc-channels", type=int, default=64, help="D's base width (64 in the paper)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--channels", type=int, default=1)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--json", default=None, help="write the records (a list) here")
  args = p.parse_args(argv)
  torch.set_num_threads(args.threads)
  print("paper-scale parameter counts match the reference:", check_paper_counts())
  peak = matmul_peak_flops()
  print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor()}; "
        f"matmul peak {peak / 1e9:.0f} GFLOP/s")
  configs = ([(args.image_size, args.ngf, args.extractor_channels)] if args.image_size
             else TABLE_CONFIGS)
  records = []
  for size, ngf, rch in configs:
    rec = bench_config(size, ngf, rch, args.batch, args.channels, args.disc_channels,
                       args.warmup, args.steps)
    rec["peak_flops"] = peak
    rec["fraction_of_peak"] = rec["flops"] / rec["s_per_step"] / peak
    records.append(rec)
    print(f"{rec['name']:<28} batch {rec['batch']}  {rec['s_per_step']:7.3f} s/step "
          f"(min {rec['min_s_per_step']:.3f})  {rec['flops'] / 1e9:6.0f} GFLOP/step  "
          f"{rec['fraction_of_peak']:.0%} of peak", flush=True)
    if args.json:  # after every config, so a long run leaves what it measured
      with open(args.json, "w") as f:
        json.dump(records, f, indent=1)


if __name__ == "__main__":
  main()
