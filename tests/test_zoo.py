"""Tests for the surrogate zoo (`deepwm attack`), removal and augmentation attacks."""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepwm_jax import cli, config as config_lib
from deepwm_jax.zoo import augment, data as zoo_data, removal, run as zoo_run
from deepwm_jax.errors import DeepwmError
from deepwm_jax.tools import zoo_bench as bench
from deepwm_jax.zoo import config as zoo_config, grid, perceptual, plan, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(name):
  return zoo_config.load(os.path.join(REPO, "configs", name))


def _smooth(n=2, size=32, channels=3, seed=0):
  """Smooth random images (JPEG's home ground)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / size
  out = []
  for _ in range(n):
    a, b, c = rng.uniform(0.5, 3, 3)
    img = 0.5 + 0.3 * np.sin(a * xx * 3 + b * yy * 2 + c)
    out.append(np.repeat(img[..., None], channels, -1) * rng.uniform(0.8, 1, channels))
  return np.clip(np.asarray(out, np.float32), 0, 1)


def _psnr(a, b):
  return float(10 * np.log10(1 / np.mean((a - b) ** 2)))


# ----------------------------------------------------------------------------- grid

def test_grid_expansion():
  cfg = _cfg("zoo_quick.py")
  members = grid.expand(cfg)
  names = [m.name for m in members]
  assert len(names) == len(set(names)) == 19
  assert "unet-l2" in names and names.count("unet-l2") == 1   # default member once
  assert {zoo_config.base_config().archs["unet"]["arch"]} <= {cfg.archs[m.arch]["arch"]
                                                              for m in members}
  assert len({cfg.archs[m.arch]["arch"] for m in members}) >= 4
  assert len({m.pixel_loss for m in members}) >= 4
  nulls = [m for m in members if m.null]
  assert {m.arch for m in nulls} == {"unet", "resnet6"}
  aug = [m for m in members if m.augmentation != "none"]
  assert all(m.arch == "unet" and m.loss == "l2" for m in aug) and len(aug) == 4
  gs = grid.groups(members)
  assert sum(len(g.members) for g in gs) == len(members)
  for g in gs:   # a group shares arch, steps, batch and whether it has a discriminator
    assert len({m.group_key for m in g.members}) == 1
  assert [g.name for g in grid.groups(members, "a")] != [g.name for g in gs]
  rows = grid.removal_rows(cfg, members)
  assert len(rows) == 7 * 3   # unet-l2 and the two nulls
  cfg.sweeps = [dict(arch=("nope",))]
  with pytest.raises(DeepwmError, match="not in config.archs"):
    grid.expand(cfg)
  cfg.sweeps = [dict(loss=("l3",))]
  with pytest.raises(DeepwmError, match="zoo loss"):
    grid.expand(cfg)
  cfg.sweeps = [dict(colour=("red",))]
  with pytest.raises(DeepwmError, match="unknown axes"):
    grid.expand(cfg)


def test_innocent_members_trained_on_the_ground_truth(tmp_path):
  """truth=True: an innocent member trained on the data's clean targets B, not on M(A); its
  own groups, so adding it leaves the other groups' names (and checkpoints) as they were."""
  cfg = _cfg("zoo_innocent.py")
  members = grid.expand(cfg)
  truth = [m for m in members if m.truth]
  assert len(members) == 34 and [m.name for m in truth] == [
      "unet-l2-null-truth", "resnet6-l2-null-truth", "dncnn-l2-null-truth", "edsr-l2-null-truth"]
  assert all(m.null for m in truth)
  without = grid.groups([m for m in members if not m.truth])
  every = grid.groups(members)
  assert {g.name for g in without} < {g.name for g in every}
  assert all(all(m.truth for m in g.members) or not any(m.truth for m in g.members)
             for g in every)
  a, clean, b = (np.full((4, 8, 8, 3), v, np.float32) for v in (0.1, 0.2, 0.3))
  d = zoo_data.AttackData(a=a, wm=clean + 0.01, clean=clean, eval_a=a, eval_clean=clean,
                          eval_wm=clean, truth=b)
  four = lambda m: dataclasses.replace(m, n_attack=4)
  np.testing.assert_array_equal(zoo_run._member_data(four(truth[0]), d)[1], b)
  np.testing.assert_array_equal(
      zoo_run._member_data(four(next(m for m in members if not m.truth)), d)[1], clean)
  cfg.sweeps = [dict(truth=(True,), null=(False,))]
  with pytest.raises(DeepwmError, match="set null=True"):
    grid.expand(cfg)


def test_a_data_free_thief_queries_dead_leaves_degraded_as_the_task_degrades():
  kit_cfg = config_lib.load("tiny")
  zcfg = _cfg("zoo_datafree.py")
  q = zoo_data.queries(kit_cfg, zcfg, 8)
  s, c = kit_cfg.data.image_size, kit_cfg.data.channels
  assert q.a.shape == q.b.shape == (8, s, s, c)
  assert kit_cfg.data.task == "rain" and np.mean(q.a) > np.mean(q.b)  # rain brightens
  np.testing.assert_array_equal(q.b, zoo_data.queries(kit_cfg, zcfg, 8).b)
  photos = zoo_data.queries(kit_cfg, _cfg("zoo_plain.py"), 8)  # the attack split's crops
  assert not np.allclose(photos.b, q.b)
  zcfg.data.queries = "imagenet"
  with pytest.raises(DeepwmError, match="data.queries"):
    zoo_data.queries(kit_cfg, zcfg, 8)


def test_plain_zoo_is_the_quick_zoo_without_augmentation_or_removal():
  quick = {m.name: m for m in grid.expand(_cfg("zoo_quick.py"))}
  cfg = _cfg("zoo_plain.py")
  plain = grid.expand(cfg)
  assert {m.name for m in plain} == {n for n, m in quick.items() if m.augmentation == "none"}
  assert all(m == quick[m.name] for m in plain)          # the same attackers, member by member
  assert sum(m.null for m in plain) == 2 and grid.removal_rows(cfg, plain) == []


def test_max_members_splits_groups_evenly():
  members = grid.expand(_cfg("zoo_quick.py"))
  whole = grid.groups(members)
  assert [g.name for g in grid.groups(members, max_members=0)] == [g.name for g in whole]
  assert [g.name for g in grid.groups(members, max_members=100)] == [g.name for g in whole]
  split = grid.groups(members, max_members=3)
  assert max(len(g.members) for g in split) == 3 < max(len(g.members) for g in whole)
  assert len({g.name for g in split}) == len(split)
  # Every member once, in the same order, and the parts of one group differ by <= 1 member.
  assert [m for g in split for m in g.members] == [m for g in whole for m in g.members]
  for g in whole:
    sizes = [len(p.members) for p in split if p.members[0].group_key == g.members[0].group_key]
    assert sum(sizes) == len(g.members) and max(sizes) - min(sizes) <= 1
    assert len(sizes) == -(-len(g.members) // 3)
  with pytest.raises(DeepwmError, match="max_members"):
    grid.groups(members, max_members=-1)
  cfg = _cfg("zoo_quick.py")
  cfg.max_members_per_device = 2
  assert train.members_per_step(cfg, train.make_mesh(1)) == 2
  cfg.max_members_per_device = -1
  with pytest.raises(DeepwmError, match="max_members_per_device"):
    train.members_per_step(cfg, train.make_mesh(1))


_PLAN_CFG = dict(archs=dict(cnn=dict(arch="cnn", ngf=2, depth=2)),
                 sweeps=[dict(loss=("l2", "l1", "ssim"))])


def _plan_cfg(**over):
  c = zoo_config.base_config()
  c.conv_impl = "xla"
  c.archs = _PLAN_CFG["archs"]
  c.sweeps = _PLAN_CFG["sweeps"]
  c.defaults.update(arch="cnn", steps=50, batch=2)
  c.bench.update(image_size=16, channels=1)
  c.update(over)
  return c


def test_plan_lists_compiles_and_times_groups(monkeypatch):
  logs = []
  listed = plan.plan(_plan_cfg(), log=logs.append)
  assert listed["members"] == 3 and len(listed["groups"]) == 1
  assert listed["groups"][0]["params_per_member"] > 0
  assert "peak_bytes" not in listed["groups"][0]      # --plan alone compiles nothing
  timed = plan.plan(_plan_cfg(max_members_per_device=2), steps=2, log=logs.append)
  assert sorted(r["members"] for r in timed["groups"]) == [1, 2]
  for r in timed["groups"]:
    assert r["peak_bytes"] >= r["temp_bytes"] > 0 and r["fits"] is True
    assert r["seconds_per_step"] > 0
    assert r["train_seconds_estimate"] == pytest.approx(50 * r["seconds_per_step"], abs=0.1)
  assert timed["train_seconds_estimate"] == pytest.approx(
      sum(r["train_seconds_estimate"] for r in timed["groups"]), abs=0.2)
  # A device too small for the group: flagged with a member count that fits, never run.
  one = next(r["peak_bytes"] for r in timed["groups"] if r["members"] == 1)
  monkeypatch.setattr(plan, "_bytes_limit", lambda mesh: int(1.5 * one / plan._HEADROOM))
  small = plan.plan(_plan_cfg(), steps=1, log=logs.append)
  row = small["groups"][0]
  assert row["fits"] is False and "seconds_per_step" not in row
  assert 1 <= row["members_per_device_that_fit"] < 3
  assert any("max_members_per_device=" in line for line in logs)


def test_attack_plan_command(tmp_path, capsys):
  out = tmp_path / "plan.json"
  assert cli.main(["attack", "--plan", "--config", os.path.join(REPO, "configs", "zoo_paper.py"),
                   "--config.max_members_per_device=8", "--json", str(out)]) == 0
  with open(out) as f:
    rep = json.load(f)
  assert rep["members"] >= 64 and rep["image_size"] == 256
  assert max(r["members"] for r in rep["groups"]) <= 8
  assert "groups at 256 px" in capsys.readouterr().err
  assert cli.main(["attack", "--plan-steps", "-1", "--config",
                   os.path.join(REPO, "configs", "zoo_tiny.py")]) == 2
  assert "--plan-steps must be >= 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- removal

def test_removal_attacks_on_known_inputs():
  x = _smooth()
  assert np.array_equal(removal.apply("none", x), x)
  j90, j10 = removal.apply("jpeg:90", x), removal.apply("jpeg:10", x)
  assert not np.array_equal(j90, x) and _psnr(j90, x) > 35 and _psnr(j10, x) < _psnr(j90, x)
  const = np.full((2, 32, 32, 1), 0.37, np.float32)
  for spec in ("rescale:0.5", "crop:0.6", "blur:2.0"):
    np.testing.assert_allclose(removal.apply(spec, const), const, atol=1e-6)
  assert removal.apply("crop:0.5", x).shape == x.shape
  # crop: a centred square of side 8 becomes one of side ~16
  sq = np.zeros((1, 32, 32, 1), np.float32)
  sq[:, 12:20, 12:20] = 1
  assert abs(float(np.sum(removal.apply("crop:0.5", sq) > 0.5)) - 256) < 40
  noisy = removal.apply("noise:0.02", np.full((4, 32, 32, 3), 0.5, np.float32), seed=3)
  assert abs(float(np.std(noisy - 0.5)) - 0.02) < 0.002
  np.testing.assert_array_equal(noisy, removal.apply("noise:0.02", np.full_like(noisy, 0.5), 3))
  blurred = removal.apply("blur:1.0", noisy)
  assert np.std(blurred) < 0.5 * np.std(noisy)
  np.testing.assert_allclose(removal.apply("jpeg:50+blur:1.0", x),
                             removal.apply("blur:1.0", removal.apply("jpeg:50", x)), atol=1e-6)
  assert removal.spec("jpeg", 50) == "jpeg:50" and removal.STRONGER["jpeg"] == -1
  for bad in ("jpeg:0", "jpeg:50.5", "blur", "crop:1.5", "foo:1", "", "none:1"):
    with pytest.raises(DeepwmError):
      removal.parse(bad)
  with pytest.raises(DeepwmError, match="NHWC"):
    removal.apply("jpeg:50", x[0])


def test_augmentation_is_identical_on_both_sides():
  x = _smooth(4)
  for spec in ("flip", "rot90", "rotate:20", "crop:0.6", "rescale:0.6", "flip+crop:0.8",
               "shift:3"):
    a, b = augment.augment(spec, x, x.copy(), np.random.default_rng(1))
    assert a.shape == x.shape and np.array_equal(a, b) and not np.array_equal(a, x), spec
  a, _ = augment.augment("none", x, x, np.random.default_rng(1))
  assert np.array_equal(a, x)
  with pytest.raises(DeepwmError):
    augment.parse("rotate:0")


def test_shift_moves_both_images_by_one_whole_pixel_offset_within_its_range():
  """What an attacker's crop at any offset of a tiled watermark sees: both images rolled by the
  same (dy, dx), |dy|, |dx| <= P, every pixel kept."""
  rng = np.random.default_rng(0)
  x, y = rng.random((6, 8, 8, 3), np.float32), rng.random((6, 8, 8, 3), np.float32)
  a, b = augment.augment("shift:2", x, y, np.random.default_rng(3))
  for i in range(len(x)):
    found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
             if np.array_equal(a[i], np.roll(x[i], (dy, dx), (0, 1)))
             and np.array_equal(b[i], np.roll(y[i], (dy, dx), (0, 1)))]
    assert len(found) == 1, i
  for bad in ("shift", "shift:0", "shift:1.5"):
    with pytest.raises(DeepwmError):
      augment.parse(bad)


# ----------------------------------------------------------------------------- training

def _tiny_setup(adversarial=False, arch=None, terms=("l1", "l2", "ssim", "lsgan", "gan")):
  return train.GroupSetup(arch_spec=arch or dict(arch="unet", ngf=4, num_downs=2),
                          image_size=16, channels=3, steps=5, adversarial=adversarial,
                          terms=terms, disc_widths=(4, 8))


def _tiny_members(losses, lrs):
  return [grid.Member(name=f"m{k}", arch="x", loss=l, augmentation="none", n_attack=8, lr=lr,
                      steps=5, batch=4, seed=k, null=False, overwrite=False)
          for k, (l, lr) in enumerate(zip(losses, lrs))]


def test_bfloat16_group_step_trains_in_float32_state():
  """compute_dtype='bfloat16' (for accelerators): the convolutions of the surrogate and of
  the PatchGAN run in bfloat16, parameters, Adam and losses stay float32, and a step runs."""
  setup = dataclasses.replace(_tiny_setup(adversarial=True, arch=dict(arch="cnn", ngf=4,
                                                                      depth=2)),
                              compute_dtype="bfloat16")
  members = _tiny_members(["l1+lsgan", "ssim+gan"], [1e-3, 3e-3])
  mesh = train.make_mesh(1)
  state = train.init_group(setup, members, 0, mesh)
  x = np.random.default_rng(0).uniform(0, 1, (2, 4, 16, 16, 3)).astype(np.float32)
  batch = jax.device_put({"x": x, "y": np.clip(x + 0.1, 0, 1)}, train.member_sharding(mesh))
  step = train.jit_group_step(train.make_group_step(setup, mesh, jit=False), mesh)
  jaxpr = str(step.trace(state, batch).jaxpr)
  assert "conv_general_dilated" in jaxpr and "bf16[" in jaxpr
  new, m = step(state, batch)
  assert np.isfinite(float(m["loss"])) and np.isfinite(float(m["d_loss"]))
  assert {a.dtype for a in jax.tree.leaves(new["members"]["model"]["params"])} == {
      np.dtype("float32")}
  assert not np.allclose(jax.tree.leaves(new["members"]["model"]["params"])[0],
                         jax.tree.leaves(state["members"]["model"]["params"])[0])
  cfg = _cfg("zoo_tiny.py")
  g = grid.groups(grid.expand(cfg))[0]
  float32_name = grid.groups(grid.expand(cfg), salt=grid.salt(cfg))[0].name
  cfg.compute_dtype = "bfloat16"   # retrains: its own group names; float32 names unchanged
  assert grid.groups(grid.expand(cfg), salt=grid.salt(cfg))[0].name != float32_name
  assert train.setup_for(g, cfg, 16, 3).compute_dtype == "bfloat16"
  cfg.compute_dtype = "float16"
  with pytest.raises(DeepwmError, match="compute_dtype"):
    train.setup_for(g, cfg, 16, 3)


@pytest.mark.slow
def test_vmapped_step_equals_per_member_steps():
  """One vmapped step over stacked members == each member's own step (BatchNorm, GAN, own
  loss and lr included)."""
  setup = _tiny_setup(adversarial=True)
  members = _tiny_members(["l1+lsgan", "ssim+gan"], [1e-3, 3e-3])
  mesh = train.make_mesh(1)
  state = train.init_group(setup, members, 0, mesh)
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (2, 4, 16, 16, 3)).astype(np.float32)
  batch = {"x": x, "y": np.clip(x + 0.1, 0, 1)}
  group_step = train.make_group_step(setup, mesh)
  member_step = jax.jit(train.make_member_step(setup))
  singles = [train.unstack(state["members"], k) for k in range(2)]
  # Full float32: on a GPU the default TF32 convs (grouped under vmap, plain per member) differ
  # by ~1e-5 after two Adam steps (H100, jax 0.11.2); the CPU computes float32 either way.
  with jax.default_matmul_precision("highest"):
    for _ in range(2):
      state, _ = group_step(state, jax.device_put(batch, train.member_sharding(mesh)))
      singles = [member_step(s, {"x": batch["x"][k], "y": batch["y"][k]})[0]
                 for k, s in enumerate(singles)]
  def check(path, a, b):
    names = [str(getattr(p, "key", p)) for p in path]
    # The PatchGAN's conv biases before InstanceNorm have a gradient of exactly 0 in theory and
    # float noise in practice, which Adam's first steps blow up to +-lr: not comparable.
    if names[0] in ("disc", "opt_d") and "bias" in names and "conv0" not in names:
      return
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg="/".join(names))

  for k in range(2):
    jax.tree_util.tree_map_with_path(check, train.unstack(state["members"], k), singles[k])
  # the members really differ (own init, loss, lr)
  p0, p1 = (jax.tree.leaves(train.unstack(state["members"], k)["model"]["params"])[0]
            for k in range(2))
  assert not np.allclose(p0, p1)


_SHARDED = textwrap.dedent("""
  import jax, numpy as np
  from deepwm_jax.zoo import grid, train
  assert jax.device_count() == 4, jax.devices()
  setup = train.GroupSetup(arch_spec=dict(arch="cnn", ngf=4, depth=3), image_size=16,
                           channels=3, steps=3, adversarial=False, terms=("l1", "l2"))
  members = [grid.Member(name=f"m{k}", arch="x", loss=("l1", "l2")[k % 2],
                         augmentation="none", n_attack=8, lr=1e-3 * (k + 1), steps=3, batch=4,
                         seed=k, null=False, overwrite=False) for k in range(4)]
  assert len(train.padded(members[:3], train.make_mesh(4))) == 4   # padded with a copy
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (4, 4, 16, 16, 3)).astype(np.float32)
  out = {}
  for n in (4, 1):
    mesh = train.make_mesh(n)
    ms = train.padded(members, mesh)
    assert len(ms) == 4
    state = train.init_group(setup, ms, 0, mesh)
    step = train.make_group_step(setup, mesh)
    for _ in range(2):
      b = jax.device_put({"x": x, "y": x[:, ::-1]}, train.member_sharding(mesh))
      state, m = step(state, b)
      jax.block_until_ready(m)
    leaf = jax.tree.leaves(state["members"]["model"])[0]
    assert len(leaf.sharding.device_set) == n, leaf.sharding
    out[n] = jax.device_get(state["members"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), out[4], out[1])
  print("SHARDED_OK")
""")


@pytest.mark.slow
def test_sharded_equals_unsharded_on_4_devices():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  r = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True,
                     timeout=300, cwd=REPO)
  assert "SHARDED_OK" in r.stdout, r.stderr[-3000:]


def test_paper_zoo_builds_with_eval_shape():
  """configs/zoo_paper.py: 256 px, >= 64 members; every group's state and step shapes and the
  member-axis sharding are built abstractly (jax.eval_shape), nothing is trained."""
  cfg = _cfg("zoo_paper.py")
  assert cfg.bench.image_size == 256
  members = grid.expand(cfg)
  assert len(members) >= 64
  assert len({cfg.archs[m.arch]["arch"] for m in members}) == 4
  assert {cfg.archs[a]["n_blocks"] for a in cfg.archs if cfg.archs[a]["arch"] == "resnet"} == {
      0, 1, 6, 9, 16}
  mesh = train.make_mesh(1)
  vgg = [tuple(jnp.asarray(a) for a in pair) for pair in perceptual.placeholder_weights()]
  params = {}
  groups = grid.groups(members)
  # Perceptual members are grouped apart; the costliest step has the VGG and the GAN both.
  full = max(groups, key=lambda g: (g.adversarial and g.perceptual, len(g.members)))
  assert full.adversarial and full.perceptual
  assert max(len(g.members) for g in groups) >= 4 and not any(
      g.perceptual and any(m.pixel_loss != "perceptual" for m in g.members) for g in groups)
  for g in groups:
    setup = train.setup_for(g, cfg, 256, 3, vgg)
    state = train.abstract_group(setup, list(g.members), mesh)
    k = len(g.members)
    # Tracing a whole 256-px training step takes seconds per group on a busy CPU: the full
    # step is traced for one group (the VGG and the GAN included).
    if g is full:
      batch = {v: jax.ShapeDtypeStruct((k, g.batch, 256, 256, 3), jnp.float32,
                                       sharding=train.member_sharding(mesh)) for v in "xy"}
      new, metrics = jax.eval_shape(train.make_group_step(setup, mesh, jit=False), state,
                                    batch)
      assert jax.tree.map(lambda a: (a.shape, a.dtype), new) == jax.tree.map(
          lambda a: (a.shape, a.dtype), state)
      assert metrics["loss"].shape == () and "d_loss" in metrics
    leaf = jax.tree.leaves(state["members"])[0]
    assert leaf.shape[0] == k and leaf.sharding.spec == jax.sharding.PartitionSpec("zoo")
    params[g.arch] = sum(np.prod(a.shape[1:]) for a in
                         jax.tree.leaves(state["members"]["model"]["params"]))
  assert params["resnet0"] < params["resnet1"] < params["resnet6"] < params["resnet9"] < params[
      "resnet16"], params


def test_perceptual_weights_file(tmp_path):
  rng = np.random.default_rng(0)
  shapes = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128),
            12: (256, 256), 14: (256, 256)}
  arrays = {}
  for idx, (o, i) in shapes.items():
    arrays[f"features.{idx}.weight"] = rng.normal(0, 0.05, (o, i, 3, 3)).astype(np.float32)
    arrays[f"features.{idx}.bias"] = np.zeros(o, np.float32)
  path = str(tmp_path / "vgg.npz")
  np.savez(path, **arrays)
  w = perceptual.load_weights(path)
  f = perceptual.features(w, jnp.zeros((1, 16, 16, 1)))
  assert f.shape == (1, 4, 4, 256)
  with pytest.raises(DeepwmError, match="not found"):
    perceptual.load_weights(str(tmp_path / "missing.npz"))
  del arrays["features.14.bias"]
  np.savez(path, **arrays)
  with pytest.raises(DeepwmError, match="features.14.bias"):
    perceptual.load_weights(path)


def test_bench_reports_both_rates():
  out = bench.member_steps_per_s(dict(arch="cnn", ngf=2, depth=2), members=2, steps=1,
                                 batch=2, image_size=16, channels=1, conv_impl="xla", repeats=1)
  assert out["vmapped_member_steps_per_s"] > 0 and out["sequential_member_steps_per_s"] > 0
  assert out["speedup"] == pytest.approx(out["vmapped_member_steps_per_s"]
                                         / out["sequential_member_steps_per_s"], rel=1e-2)


# ----------------------------------------------------------------------------- end to end

_ZOO = """
from deepwm_jax.zoo.config import base_config

def get_config():
  c = base_config()
  c.conv_impl = "xla"
  c.data.n_eval = 8
  c.archs = dict(unet=dict(arch="unet", ngf=4, num_downs=3))
  c.defaults.update(n_attack=32, steps=2, batch=4)
  c.sweeps = [dict(loss=("l2", "l1", "perceptual")), dict(augmentation=("rot90",)),
              dict(overwrite=(True,)), dict(null=(True,))]
  c.removal.update(attacks=("jpeg:50", "rescale:0.5"), members=("unet-l2",))
  c.overwrite.update(steps=2, embedder_ngf=4, extractor_channels=4)
  c.log_every = 1
  c.ckpt_every = 1
  return c
"""


@pytest.mark.slow
def test_tiny_zoo_end_to_end_and_resume(tiny_run, tmp_path, capsys):
  workdir, _, _ = tiny_run
  kit = os.path.join(workdir, "kit")
  cfg = tmp_path / "zoo.py"
  cfg.write_text(_ZOO)
  w = str(tmp_path / "zoo")
  argv = ["attack", "--kit", kit, "--config", str(cfg), "--workdir", w]
  assert cli.main(argv) == 0
  err = capsys.readouterr().err
  assert "skipping 1 perceptual-loss member" in err
  with open(os.path.join(w, "report.json")) as f:
    rep = json.load(f)
  rows = {r["name"]: r for r in rep["members"]}
  assert {"unet-l2", "unet-l1", "unet-l2-aug=rot90", "unet-l2-overwrite", "unet-l2-null",
          "unet-l2@jpeg:50", "unet-l2-null@rescale:0.5"} <= set(rows)
  assert len(rows) == 5 + 2 * 2
  for r in rows.values():
    for key in ("name", "arch", "loss", "augmentation", "removal", "null", "success_rate",
                "nc_mean", "centered_nc_mean", "task_psnr"):
      assert key in r, key
    assert r["n_images"] == 8
  assert rows["unet-l2-null"]["null"] and rows["unet-l2-null"]["success_rate"] == 0
  assert rows["unet-l2@jpeg:50"]["removal"] == "jpeg:50"
  # Each member as trained also serves the held-out photos whole (squares of a multiple of the
  # crop), judged alone and as a set; removal rows have no whole photos. The null is innocent.
  for name, r in rows.items():
    assert ("whole_set_p" in r) == ("@" not in name), name
  null = rows["unet-l2-null"]
  assert null["whole_side"] % 16 == 0 and null["whole_photos"].endswith("/4")
  assert not null["whole_set_detected"] and 0 < null["whole_set_p"] <= 1
  assert "serves the held-out photos whole" in open(os.path.join(w, "report.md")).read()
  assert rep["skipped"][0]["name"] == "unet-perceptual"
  assert rep["timing"]["total"] > 0 and rep["summary"]
  assert os.path.exists(os.path.join(w, "report.md"))
  assert os.path.exists(os.path.join(w, "figures", "zoo_heatmap.png"))

  # Re-running skips the finished group: no checkpoint is rewritten.
  ckpts = os.path.join(w, "checkpoints")
  before = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, fs in os.walk(ckpts) for f in fs}
  assert cli.main(argv) == 0
  assert "finished earlier: skipped" in capsys.readouterr().err
  after = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
           for d, _, fs in os.walk(ckpts) for f in fs}
  assert before == after
  with open(os.path.join(w, "report.json")) as f:
    assert [r["success_rate"] for r in json.load(f)["members"]] == [
        r["success_rate"] for r in rep["members"]]

  # The same workdir against another kit is refused, nothing is overwritten.
  with open(os.path.join(w, "zoo.json")) as f:
    saved = json.load(f)
  saved["kit_manifest_sha256"] = "0" * 64
  with open(os.path.join(w, "zoo.json"), "w") as f:
    json.dump(saved, f)
  assert cli.main(argv) == 2
  assert "another kit" in capsys.readouterr().err


def test_summary_judges_an_augmentation_against_the_same_surrogate_without_it():
  """The baseline of 'unet-l2 + flip' is unet-l2 (same data, lr, steps, seed), not the plain
  member trained on less data, which is not detected here."""
  from deepwm_jax.zoo import report

  def row(name, detected, **kw):
    r = dict(name=name, member=name, arch="unet", family="unet", loss="l2", augmentation="none",
             removal="none", null=False, overwrite=False, n_attack=1024, lr=1e-3, steps=100,
             seed=0, detected=detected, success_rate=1.0 if detected else 0.0, task_psnr=30.0)
    r.update(kw)
    return r

  rows = [row("unet-l2", True), row("unet-l2-n256", False, n_attack=256),
          row("unet-l2-aug=flip", False, augmentation="flip")]
  text = report.summary(rows, [])
  assert "Augmentation attacks defeat detection in 1 of 1" in text
  assert "cannot be judged" not in text


def test_summary_blames_an_architecture_only_where_a_pixel_loss_failed_too():
  """A family tried only with SSIM (a probe zoo) is not called beaten by its
  architecture; one whose L2 member failed is."""
  from deepwm_jax.zoo import report

  def row(name, family, loss, detected):
    return dict(name=name, member=name, arch=family, family=family, loss=loss,
                augmentation="none", removal="none", null=False, overwrite=False, n_attack=1024,
                lr=1e-3, steps=100, seed=0, detected=detected,
                success_rate=1.0 if detected else 0.1, task_psnr=30.0)

  text = report.summary([row("resnet-l2", "resnet", "l2", True),
                         row("unet-ssim", "unet", "ssim", False)], [])
  assert "architecture alone" not in text
  assert "No unet surrogate was detected, but the zoo tried that family only with ssim" in text
  text = report.summary([row("cnn-l2+lsgan", "cnn", "l2+lsgan", False),
                         row("cnn-ssim", "cnn", "ssim", False)], [])
  assert "No cnn surrogate copied the watermark detectably, so the architecture alone" in text


def test_null_members_are_summarised_by_architecture():
  from deepwm_jax.zoo import report as zoo_report
  members = [
      {"name": "a", "arch": "unet", "family": "unet", "null": True, "removal": "none",
       "detected": False, "p_value": 0.3},
      {"name": "b", "arch": "unet", "family": "unet", "null": True, "removal": "none",
       "detected": True, "p_value": 1e-9},
      {"name": "b@jpeg:50", "arch": "unet", "family": "unet", "null": True,
       "removal": "jpeg:50", "detected": True, "p_value": 1e-12},
      {"name": "c", "arch": "cnn", "family": "cnn", "null": False, "removal": "none",
       "detected": True, "p_value": 1e-20},
  ]
  per_image = {"a": {"stats": [0.1, 0.4]}, "b": {"stats": [0.9, 0.2]},
               "b@jpeg:50": {"stats": [1.0]}, "c": {"stats": [1.0]}}
  rows = zoo_report.null_by_arch(members, per_image)
  assert rows == [{"arch": "unet", "family": "unet", "members": 2, "detected": 1,
                   "smallest p-value": 1e-9, "largest statistic": 0.9}]


def test_summary_and_null_table_count_whole_photos():
  """Members that served whole photos: the summary says how many plain ones were read there,
  and a null model claimed on its whole photos is a false positive like any other."""
  from deepwm_jax.zoo import report as zoo_report

  def row(name, null, detected, whole_detected, whole_p):
    return dict(name=name, member=name, arch="unet", family="unet", loss="l2",
                augmentation="none", removal="none", null=null, overwrite=False, n_attack=64,
                lr=1e-3, steps=10, seed=0, detected=detected, p_value=1e-9 if detected else 0.5,
                success_rate=1.0 if detected else 0.0, task_psnr=30.0, whole_photos="0/4",
                whole_set_p=whole_p, whole_set_detected=whole_detected)

  rows = [row("unet-l2", False, True, False, 1e-5), row("unet-l1", False, True, True, 1e-8),
          row("unet-l2-null", True, False, False, 0.4)]
  text = zoo_report.summary(rows, [])
  assert "Serving whole photos, 1 of 2 plain surrogates are detected (unet-l1)." in text
  assert "no image counted as watermarked, whole photos included." in text
  rows[2] = row("unet-l2-null", True, False, True, 1e-7)
  assert "FALSE POSITIVES: unet-l2-null" in zoo_report.summary(rows, [])
  nulls = zoo_report.null_by_arch(rows, {"unet-l2-null": {"stats": [0.3]}})
  assert nulls[0]["whole-photo sets detected"] == 1 and nulls[0]["smallest whole-photo p"] == 1e-7
