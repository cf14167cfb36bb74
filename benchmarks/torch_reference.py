"""PyTorch reference for the stage-1 step: the same networks and losses, timed on this machine.

PyTorch is NOT a dependency of deepwm_jax; install it on the side (benchmarks/README.md):

    python3 -m venv /work/torchvenv && /work/torchvenv/bin/pip install torch==2.13.0 numpy
    /work/torchvenv/bin/python benchmarks/torch_reference.py --json torch_ref.json

Without --image-size it runs the four docs/performance.md configs (batch 8, grayscale):
64px ngf16 R32, 128px ngf16 R32, 64px ngf64 R128, 128px ngf64 R128. The networks follow
docs/method.md (embedder H = pix2pix U-Net, extractor R = dilated residual CNN,
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
import sys
import time

# OpenMP's default spin-waiting collapses when another process shares the cores (a 64 px step
# took 10-14 s instead of 1.1 s on a busy 2-core machine); passive waiting costs little when
# the machine is quiet. Set before torch loads OpenMP; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # pylint: disable=wrong-import-position
from torch import nn  # pylint: disable=wrong-import-position
import torch.nn.functional as F  # pylint: disable=wrong-import-position

PAPER_COUNTS = {"embedder": 41_823_873, "extractor": 3_366_145, "discriminator": 1_554_433}
TABLE_CONFIGS = [  # (image_size, ngf, extractor_channels): docs/performance.md's table
    (64, 16, 32), (128, 16, 32), (64, 64, 128), (128, 64, 128)]


# ---------------------------------------------------------------------------------------------
# Networks (NCHW, as the reference code)

class UnetBlock(nn.Module):
  """pix2pix UnetSkipConnectionBlock with BatchNorm (so convs carry no bias, except the
  outermost transposed conv)."""

  def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False,
               innermost=False, activation=True):
    super().__init__()
    self.outermost = outermost
    input_nc = outer_nc if input_nc is None else input_nc
    down = nn.Conv2d(input_nc, inner_nc, 4, 2, 1, bias=False)
    if outermost:
      up = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1)
      layers = [down, submodule, nn.ReLU(True), up] + ([nn.Sigmoid()] if activation else [])
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


def level_features(ngf, num_downs):
  return [ngf * min(2**i, 8) for i in range(num_downs)]


def unet(channels, image_size, ngf, num_downs=0, in_channels=None):
  """pix2pix U-Net body (pre-activation output); num_downs 0 means log2(size) - 1 levels,
  level i has ngf * min(2**i, 8) channels (deepwm_jax.models.unet)."""
  feats = level_features(ngf, num_downs or int(math.log2(image_size)) - 1)
  block = UnetBlock(feats[-2], feats[-1], innermost=True)
  for i in range(len(feats) - 2, 0, -1):
    block = UnetBlock(feats[i - 1], feats[i], submodule=block)
  return UnetBlock(channels, feats[0], input_nc=in_channels or 2 * channels, submodule=block,
                   outermost=True, activation=False)


class Generator(nn.Module):
  """Image -> image in [0, 1] (deepwm_jax.models.Generator): 'sigmoid' (the reference),
  'residual' (x + scale * tanh(h), clipped), 'tanh01', 'linear'; `cond` is concatenated."""

  def __init__(self, body, output="sigmoid", residual_scale=0.1):
    super().__init__()
    self.body, self.output, self.residual_scale = body, output, residual_scale

  def forward(self, x, cond=None):
    inp = x if cond is None else torch.cat([x, cond.expand_as(x)], 1)
    h = self.body(inp)
    if self.output == "sigmoid":
      return torch.sigmoid(h)
    if self.output == "residual":
      return torch.clamp(x + self.residual_scale * torch.tanh(h), 0.0, 1.0)
    if self.output == "tanh01":
      return 0.5 * (torch.tanh(h) + 1.0)
    return h


def embedder(channels, image_size, ngf, num_downs=0, output="sigmoid", residual_scale=0.1):
  """H: U-Net on (image, watermark); the reference: num_downs = log2(size) - 1, sigmoid."""
  return Generator(unet(channels, image_size, ngf, num_downs), output, residual_scale)


class PlainCNN(nn.Module):
  """DnCNN-like surrogate (deepwm_jax.models.cnn): residual output, InstanceNorm inside."""

  def __init__(self, channels, ngf=32, depth=8):
    super().__init__()
    layers = [nn.Conv2d(channels, ngf, 3, 1, 1), nn.ReLU(True)]
    for _ in range(depth - 2):
      layers += _conv_in_relu(ngf, ngf)
    layers.append(nn.Conv2d(ngf, channels, 3, 1, 1))
    self.body = nn.Sequential(*layers)

  def forward(self, x):
    return x + self.body(x)


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


def extractor(channels, ch, dilations=(2, 2, 2, 2, 4, 4, 4, 4, 1), output="relu"):
  """R: three stem convs (the third stride 2), dilated residual blocks, back up."""
  head = [nn.ReLU(True)] if output == "relu" else [nn.Sigmoid()] if output == "sigmoid" else []
  return nn.Sequential(
      *_conv_in_relu(channels, ch), *_conv_in_relu(ch, ch), *_conv_in_relu(ch, ch, stride=2),
      *[ResBlock(ch, d) for d in dilations],
      nn.ConvTranspose2d(ch, ch, 4, 2, 1), nn.InstanceNorm2d(ch, affine=True), nn.ReLU(True),
      *_conv_in_relu(ch, ch, bias=True),
      nn.Conv2d(ch, channels, 1), *head)


def discriminator(channels, base=64, widths=None):
  """D: PatchGAN, 3x3 stride-2 convs (64-128-256-512 in the reference), InstanceNorm (no
  affine) on all but the first."""
  widths = widths or [base, 2 * base, 4 * base, 8 * base]
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
  """Conv weights N(0, 0.02), BatchNorm scale N(1, 0.02), biases 0 (docs/method.md)."""
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
# Stage-1 step (docs/method.md)

def adaptive_grad_clip(modules, clip, eps=1e-3):
  """optax.adaptive_grad_clip on torch gradients: each output unit's gradient norm is kept
  below clip * max(its weight norm, eps) (norms over all axes but the output-channel one;
  vectors elementwise)."""
  with torch.no_grad():
    for m in (m for net in modules for m in net.modules()):
      for name, p in m.named_parameters(recurse=False):
        if p.grad is None:
          continue
        out_axis = 1 if isinstance(m, nn.ConvTranspose2d) and name == "weight" else 0
        dims = tuple(i for i in range(p.ndim) if i != out_axis) if p.ndim > 1 else None
        def unit_norm(x):
          return x.abs() if dims is None else torch.linalg.vector_norm(x, dim=dims, keepdim=True)
        max_norm = unit_norm(p).clamp_min(eps) * clip
        g_norm = unit_norm(p.grad)
        p.grad.mul_(torch.where(g_norm < max_norm, torch.ones_like(g_norm),
                                max_norm / g_norm.clamp_min(1e-6)))


def _adam(params, opt):
  return torch.optim.Adam(params, opt.get("lr", 2e-4),
                          betas=(opt.get("b1", 0.5), opt.get("b2", 0.999)))


def make_step(h, r, d, opt_hr, opt_d, agc_hr=0.0, agc_d=0.0):
  """The stage-1 step (docs/method.md); agc_* > 0 clips gradients like optax's
  adaptive_grad_clip before Adam (the small-scale configs use it)."""
  mse = F.mse_loss

  def step(a, b, watermark, blank):
    batch = b.shape[0]
    marked = h(b, watermark)
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
    if agc_hr:
      adaptive_grad_clip((h, r), agc_hr)
    opt_hr.step()
    d_real, d_fake = d(b), d(marked.detach())
    loss_d = 1e4 * 0.5 * (mse(d_real, torch.ones_like(d_real))
                          + mse(d_fake, torch.zeros_like(d_fake)))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    if agc_d:
      adaptive_grad_clip((d,), agc_d)
    opt_d.step()
    return float(loss_h.detach() + loss_r.detach()), float(loss_d.detach())
  return step


def image_model(spec, channels, image_size):
  """A surrogate / task model from its spec (deepwm_jax.models.image_model): unet or cnn."""
  if spec["arch"] == "unet":
    body = unet(channels, image_size, spec["ngf"], spec.get("num_downs", 0),
                in_channels=channels)
    return Generator(body, spec.get("output", "residual"), spec.get("residual_scale", 0.5))
  if spec["arch"] == "cnn":
    return PlainCNN(channels, spec["ngf"], spec.get("depth", 8))
  raise ValueError(f"no PyTorch reference for arch {spec['arch']!r} (unet and cnn are here)")


def make_imitation_step(model, opt, loss, agc=0.0):
  """One supervised step x -> y (deepwm_jax.train.imitation): the surrogate's training."""
  pixel = F.l1_loss if loss == "l1" else F.mse_loss

  def step(x, y):
    out = model(x)
    value = pixel(out, y)
    opt.zero_grad(set_to_none=True)
    value.backward()
    if agc:
      adaptive_grad_clip((model,), agc)
    opt.step()
    return float(value.detach())
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


def reference_case(image_size, ngf, extractor_channels, batch=8, channels=1, disc_channels=64):
  """A stage-1 case with the reference architectures (what `bench_config` and the table use)."""
  return {"kind": "stage1", "image_size": image_size, "channels": channels, "batch": batch,
          "embedder": {"ngf": ngf, "num_downs": 0, "output": "sigmoid"},
          "extractor": {"channels": extractor_channels,
                        "dilations": [2, 2, 2, 2, 4, 4, 4, 4, 1], "output": "relu"},
          "disc_widths": [disc_channels * m for m in (1, 2, 4, 8)]}


def build_case(case):
  """(step, args, params) for a case description (the JSON `deepwm bench` sends): kind
  'stage1' (H, R, D) or 'imitation' (one surrogate; `members` > 1 runs that many independent
  models one after the other, as PyTorch would train a zoo)."""
  torch.manual_seed(0)
  size, c, batch = case["image_size"], case["channels"], case["batch"]
  shape = (batch, c, size, size)
  if case["kind"] == "stage1":
    e, x = case["embedder"], case["extractor"]
    h = embedder(c, size, e["ngf"], e.get("num_downs", 0), e.get("output", "sigmoid"),
                 e.get("residual_scale", 0.1))
    r = extractor(c, x["channels"], tuple(x["dilations"]), x.get("output", "relu"))
    d = discriminator(c, widths=list(case["disc_widths"]))
    for net in (h, r, d):
      init_reference(net)
      net.train()
    opt_g, opt_d = case.get("optimizer", {}), case.get("disc_optimizer", {})
    step = make_step(h, r, d, _adam(list(h.parameters()) + list(r.parameters()), opt_g),
                     _adam(d.parameters(), opt_d), opt_g.get("agc", 0.0), opt_d.get("agc", 0.0))
    a, b = torch.rand(shape), torch.rand(shape)
    watermark = (torch.rand((1,) + shape[1:]) > 0.5).float()
    args = (a, b, watermark, torch.ones((1,) + shape[1:]))
    return step, args, {"embedder": count(h), "extractor": count(r), "discriminator": count(d)}
  if case["kind"] == "imitation":
    spec, steps, models = case["model"], [], []
    for _ in range(case.get("members", 1)):
      model = image_model(spec, c, size)
      init_reference(model)
      model.train()
      opt = spec.get("optimizer", {})
      steps.append(make_imitation_step(model, _adam(model.parameters(), opt),
                                       spec.get("loss", "l2"), opt.get("agc", 0.0)))
      models.append(model)
    args = (torch.rand(shape), torch.rand(shape))
    step = steps[0] if len(steps) == 1 else lambda *a: [s(*a) for s in steps]
    return step, args, {"model": count(models[0])}
  raise ValueError(f"unknown case kind {case['kind']!r}; use stage1 or imitation")


def bench_config(image_size, ngf, extractor_channels, batch, channels, disc_channels, warmup,
                 steps):
  case = reference_case(image_size, ngf, extractor_channels, batch, channels, disc_channels)
  step, args, params = build_case(case)
  flops = step_flops(step, args)
  median_s, min_s = _median_step_seconds(step, args, warmup, steps)
  return {"name": f"stage1 {image_size}px ngf{ngf} R{extractor_channels}",
          "framework": "pytorch", "torch_version": torch.__version__,
          "threads": torch.get_num_threads(),
          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "image_size": image_size, "channels": channels,
          "ngf": ngf, "extractor_channels": extractor_channels, "disc_channels": disc_channels,
          "batch": batch, "s_per_step": median_s, "min_s_per_step": min_s,
          "steps_per_s": 1 / median_s, "images_per_s": batch / median_s, "flops": flops,
          "params": params}


def serve(inp, out):
  """Line protocol for `deepwm bench --torch`: the JAX process sends one JSON request per
  line and reads one JSON reply, so that it can interleave PyTorch steps with its own.

  {"cmd": "info"} -> versions, threads and this framework's matmul peak
  {"cmd": "setup", "case": {...}} -> parameter counts and FLOPs per step (one step run)
  {"cmd": "step"} -> {"s": seconds of one step of the last case set up}
  {"cmd": "quit"}
  """
  step = args = None
  for line in inp:
    req = json.loads(line)
    try:
      if req["cmd"] == "info":
        reply = {"torch_version": torch.__version__, "threads": torch.get_num_threads(),
                 "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                 "peak_flops": matmul_peak_flops()}
      elif req["cmd"] == "setup":
        step, args, params = build_case(req["case"])
        reply = {"params": params, "flops": step_flops(step, args)}
        step(*args)  # warm-up after the counting pass
      elif req["cmd"] == "step":
        reply = {"s": _timed(lambda: step(*args))}
      elif req["cmd"] == "quit":
        return
      else:
        reply = {"error": f"unknown cmd {req['cmd']!r}"}
    except Exception as e:  # pylint: disable=broad-except
      reply = {"error": f"{type(e).__name__}: {e}"}
    out.write(json.dumps(reply) + "\n")
    out.flush()


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--image-size", type=int, default=None,
                 help="one config; without it, the four docs/performance.md configs")
  p.add_argument("--ngf", type=int, default=64)
  p.add_argument("--extractor-channels", type=int, default=128)
  p.add_argument("--disc-channels", type=int, default=64, help="D's base width (64 in the paper)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--channels", type=int, default=1)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--json", default=None, help="write the records (a list) here")
  p.add_argument("--serve", action="store_true",
                 help="answer `deepwm bench --torch` requests on stdin/stdout (see `serve`)")
  args = p.parse_args(argv)
  torch.set_num_threads(args.threads)
  if args.serve:
    serve(sys.stdin, sys.stdout)
    return
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
