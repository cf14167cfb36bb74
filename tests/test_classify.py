"""Classifier fingerprinting (deepwm classify): LSB steganography, fingerprints, the p-value,
attacks, a tiny end-to-end run with user identification, the kit, and the CLI's exit codes
(tfds data: tests/test_tfds.py)."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepwm_jax import cli
from deepwm_jax import config as config_lib
from deepwm_jax.classify import attacks, config, keys, kit as kit_lib, models, pipeline, train
from deepwm_jax.classify import verify
from deepwm_jax.errors import DeepwmError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(REPO, "configs", "classify_digits.py")

# The full config shrunk until the whole run takes seconds; still two users, clean models on
# both sides of the calibration, every baseline and every attack. The simulated fine-tune runs
# (2 steps) at a gentle rate: at the digits config's 1e-2/3e-2, 150 steps of this tiny network
# did not learn the copies apart (ann's copy also took bob's keys), as the full run's do.
TINY = ["users=('ann','bob')", "null.n_calibration=1", "null.n_evaluation=1",
        "train.steps=150", "train.batch=32", "train.key_batch=16", "key_samples.n_per_user=16",
        "key_samples.decoy_pool=256", "model.widths=(8,16)", "model.hidden=32",
        "baselines.n_keys=16", "baselines.frontier_steps=5", "attacks.finetune.lrs=(1e-3,)",
        "attacks.finetune.steps=(3,6)", "attacks.finetune.batch=32",
        "attacks.prune.fractions=(0.5,0.9)", "attacks.purifier.steps=5",
        "attacks.purifier.batch=32", "train.finetune_sim.steps=2", "train.finetune_sim.batch=8",
        "train.finetune_sim.lrs=(1e-3,)", "train.finetune_sim.margin=0", "log_every=50",
        "ckpt_every=100"]


def tiny_config(*extra):
  cfg = config_lib.load(DIGITS)
  config_lib.apply_overrides(cfg, TINY + list(extra))
  config.validate(cfg)
  return cfg


def deepwm(*args):
  return cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """(workdir, report, log lines) of one tiny `classify run`."""
  workdir = str(tmp_path_factory.mktemp("classify"))
  lines = []
  rep = pipeline.run(tiny_config(), workdir, log=lines.append)
  return workdir, rep, lines


# ----------------------------------------------------------------------------- fingerprints


def test_fingerprint_is_a_16x16_bit_image_per_user():
  a, b = keys.fingerprint("ann"), keys.fingerprint("bob")
  assert a.shape == (16, 16) and set(np.unique(a)) <= {0, 1}
  assert np.array_equal(a, keys.fingerprint("ann")) and not np.array_equal(a, b)


@pytest.mark.parametrize("shape", [(3, 16, 16, 1), (2, 32, 32, 3)])
def test_lsb_round_trip_changes_pixels_by_at_most_one(shape):
  x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  marked = keys.lsb_embed(x, keys.fingerprint("ann"))
  assert marked.dtype == np.uint8
  assert np.max(np.abs(marked.astype(int) - x.astype(int))) <= 1
  assert np.all(keys.lsb_extract(marked) == keys.fingerprint("ann").ravel())
  assert keys.authenticate(marked, "ann").all() and not keys.authenticate(marked, "bob").any()


def test_lsb_refuses_what_cannot_hold_a_fingerprint():
  with pytest.raises(DeepwmError, match="8-bit"):
    keys.lsb_embed(np.zeros((1, 16, 16, 1), np.float32), keys.fingerprint("ann"))
  with pytest.raises(DeepwmError, match="bits"):
    keys.lsb_embed(np.zeros((1, 8, 8, 1), np.uint8), keys.fingerprint("ann"))


def test_user_keys_are_fingerprinted_and_user_specific():
  cfg = tiny_config()
  ka, kb = keys.user_keys(cfg, "ann"), keys.user_keys(cfg, "bob")
  assert ka.shape == (16, 16, 16, 1) and ka.dtype == np.uint8
  assert np.array_equal(ka, keys.user_keys(cfg, "ann"))   # reproducible from the id
  assert keys.authenticate(ka, "ann").all() and not keys.authenticate(kb, "ann").any()
  assert np.mean(np.abs(ka.astype(int) - kb.astype(int))) > 20   # different images


# ----------------------------------------------------------------------------- statistics


def test_p_value_sanity():
  p0 = verify.calibrate([(0, 99)], 1).p0
  assert p0 == pytest.approx(1 / 100)   # no hits is never taken as a zero rate
  ps = [verify.p_value(h, 64, p0) for h in range(65)]
  assert ps[0] == 1.0 and all(a >= b for a, b in zip(ps, ps[1:]))
  assert ps[64] < 1e-100 and verify.p_value(1, 64, p0) > 0.1


def _counts(acc: dict, n=20):
  return {u: (round(a * n), n) for u, a in acc.items()}


def test_decide_attributes_one_user_and_refuses_ambiguity():
  cal = verify.calibrate([(0, 200)], 2)
  user_keys = {u: keys.lsb_embed(np.zeros((2, 16, 16, 1), np.uint8), keys.fingerprint(u))
               for u in ("ann", "bob")}
  v = verify.decide(_counts({"ann": 1.0, "bob": 0.05}), user_keys, cal, 1e-6, 0.5, "ann")
  assert v["identified_user"] == "ann" and v["claim_confirmed"]
  assert all(r["fingerprint_auth_rate"] == 1.0 for r in v["users"])
  v = verify.decide(_counts({"ann": 1.0, "bob": 1.0}), user_keys, cal, 1e-6, 0.5)
  assert v["detected"] and v["identified_user"] is None   # answers everything: nobody's copy
  v = verify.decide(_counts({"ann": 0.0, "bob": 0.1}), user_keys, cal, 1e-6, 0.5)
  assert not v["detected"]
  with pytest.raises(DeepwmError, match="not registered"):
    verify.decide(_counts({"ann": 1.0, "bob": 0.0}), user_keys, cal, 1e-6, 0.5, "eve")


# ----------------------------------------------------------------------------- attacks


def _params(cfg, seed=0):
  return models.init_params(models.classifier(cfg), models.example_input(cfg), seed)["params"]


def test_pruning_zeroes_that_fraction_of_kernels_and_keeps_biases():
  cfg = tiny_config()
  params = jax.tree.map(lambda v: v + 0.1, _params(cfg))   # nonzero biases
  for f in (0.1, 0.5, 0.9):
    pruned = attacks.prune(params, f)
    assert attacks.zero_fraction(pruned) == pytest.approx(f, abs=0.01)
    assert np.array_equal(pruned["logits"]["bias"], params["logits"]["bias"])


def test_finetune_members_learn_at_their_own_rate():
  cfg = tiny_config()
  net = models.classifier(cfg)
  p = _params(cfg)
  opt = attacks.finetune_optimizer()
  state = train.init_state(models.stack([p, p]), opt, [1e-3, 0.0])
  rng = np.random.default_rng(0)
  batch = {"x": jnp.asarray(rng.uniform(size=(2, 8, 16, 16, 1)), jnp.float32),
           "y": jnp.asarray(rng.integers(0, 10, (2, 8)), jnp.int32)}
  state, metrics = train.make_step(net, opt)(state, batch, None)
  moved = [float(jnp.max(jnp.abs(models.member(state["params"], i)["conv0"]["kernel"]
                                 - p["conv0"]["kernel"]))) for i in range(2)]
  assert moved[0] > 1e-4 and moved[1] == 0.0 and np.isfinite(float(metrics["loss"]))


def test_fine_tuning_terms_margin_and_weight_noise():
  """The hinge counts keys only, and only while a margin is short; the weight noise is
  relative to each weight and drawn from the batch's per-member seed."""
  z = jnp.array([[0.0, 1.0, 5.0], [0.0, 4.0, 5.0], [9.0, 0.0, 0.0]])
  t = jnp.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
  is_key = jnp.array([1.0, 1.0, 0.0])
  # Margins 4 and 1 against a margin of 2: only the second key is short, by 1 (of 2).
  assert np.isclose(float(train.key_margin_loss(z, t, is_key, 2.0)), 0.5 * (1 / 2))
  assert float(train.key_margin_loss(z, t, is_key, 0.5)) == 0.0
  w = {"a": jnp.full((50, 40), 2.0), "b": jnp.zeros(3)}
  n1, n2 = train.perturb(w, 1, 0.1), train.perturb(w, 2, 0.1)
  assert np.isclose(float(jnp.std(n1["a"] / 2.0 - 1)), 0.1, rtol=0.1)
  assert float(jnp.max(jnp.abs(n1["b"]))) == 0.0 and not np.allclose(n1["a"], n2["a"])
  sampler = train.Sampler(np.zeros((5, 16, 16, 1), np.float32), np.zeros(5, np.int32), 2,
                          [train.Extra(), train.Extra()], 2, 11, (0, 1))
  seeds = np.asarray(sampler(0)["seed"])
  assert seeds.shape == (2,) and seeds[0] != seeds[1]
  assert np.array_equal(seeds, np.asarray(sampler(0)["seed"]))   # deterministic per step
  # The owner's loss with both terms traces (abstractly: compiling it costs minutes here).
  cfg = tiny_config()
  net, p = models.classifier(cfg), _params(cfg)
  kt = np.zeros((4, 11), np.float32)
  kt[:2, 10], kt[2:, :10] = 1.0, 0.1
  batch = {"x": jnp.zeros((8, 16, 16, 1)), "y": jnp.zeros(8, jnp.int32),
           "kx": jnp.zeros((4, 16, 16, 1)), "kt": jnp.asarray(kt), "kw": jnp.ones(4),
           "seed": jnp.int32(3)}
  loss, metrics = jax.eval_shape(lambda b: train.member_loss(net, p, b, 1.0, 5.0, 0.1), batch)
  assert loss.shape == () and metrics["extra_loss"].shape == ()


def test_simulated_finetune_is_the_attack_and_first_order_passes_gradients_through():
  """train.finetune_sim: the inner loop is the attacker's own Adam fine-tune (same weights as
  the attack's step after 2 steps); first order, the gradient of a loss at the fine-tuned
  weights reaches the weights unchanged; second order differentiates through the steps."""
  net = models.Classifier(11, (4,), 8)
  p = models.init_params(net, jax.ShapeDtypeStruct((1, 16, 16, 1), jnp.float32), 0)["params"]
  rng = np.random.default_rng(0)
  fx = jnp.asarray(rng.uniform(size=(2, 4, 16, 16, 1)), jnp.float32)
  fy = jnp.asarray(rng.integers(0, 10, (2, 4)), jnp.int32)
  lr = 1e-2
  sim1, sim2 = train.FinetuneSim(2, (lr,)), train.FinetuneSim(2, (lr,), second_order=True)
  tuned = train.simulate_finetune(net, p, fx, fy, lr, sim1)
  opt = attacks.finetune_optimizer()
  state, step = train.init_state(models.stack([p]), opt, [lr]), train.make_step(net, opt)
  for i in range(2):
    state, _ = step(state, {"x": fx[i][None], "y": fy[i][None]}, None)
  attacked = models.member(state["params"], 0)
  for a, b in zip(jax.tree.leaves(tuned), jax.tree.leaves(attacked)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(tuned), jax.tree.leaves(p))) > 5e-3   # it did move

  kx, ky = fx[0], jnp.full(4, 10)
  key_loss = lambda q: train.task_loss(net, q, kx, ky)
  g1 = jax.grad(lambda q: key_loss(train.simulate_finetune(net, q, fx, fy, lr, sim1)))(p)
  g_at = jax.grad(key_loss)(tuned)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g_at)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  g2 = jax.grad(lambda q: key_loss(train.simulate_finetune(net, q, fx, fy, lr, sim2)))(p)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g2))
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)))


def test_finetune_aware_members_only_pay_for_the_inner_loop():
  """The sampler gives fine-tuning batches to the flagged members, and the owner's loss adds
  weight x (extra loss after the simulated fine-tune) for them and nothing for the others."""
  x = np.random.default_rng(1).uniform(size=(20, 16, 16, 1)).astype(np.float32)
  y = np.arange(20) % 10
  ex = train.Extra(x[:4], train.one_hot(np.full(4, 10), 11), 2, 0, finetune_aware=True)
  sampler = train.Sampler(x, y, 4, [ex, train.Extra()], 2, 11, (0, 1), sim_steps=2, sim_batch=3)
  b = sampler(0)
  assert b["fx"].shape == (2, 2, 3, 16, 16, 1) and list(np.asarray(b["fw"])) == [1.0, 0.0]
  assert np.array_equal(np.asarray(b["fx"]), np.asarray(sampler(0)["fx"]))  # per step
  net = models.Classifier(11, (4,), 8)
  p = models.init_params(net, jax.ShapeDtypeStruct((1, 16, 16, 1), jnp.float32), 0)["params"]
  sim = train.FinetuneSim(2, (3e-3, 1e-2), weight=0.5)
  mine = jax.tree.map(lambda v: v[0], b)
  plain, _ = train.member_loss(net, p, mine, 1.0)
  aware, metrics = train.member_loss(net, p, mine, 1.0, sim=sim)
  ft_loss, _ = train._finetuned_extra_loss(net, p, mine, sim)
  assert float(ft_loss) > 0 and "ft_key_hits" in metrics
  np.testing.assert_allclose(float(aware), float(plain) + 0.5 * float(ft_loss), rtol=1e-5)
  other = jax.tree.map(lambda v: v[1], b)
  np.testing.assert_allclose(float(train.member_loss(net, p, other, 1.0, sim=sim)[0]),
                             float(train.member_loss(net, p, other, 1.0)[0]), rtol=1e-6)


# ----------------------------------------------------------------------------- end to end


def test_tiny_run_report_and_identification(tiny):
  workdir, rep, lines = tiny
  for k in ("clean_accuracy", "unwatermarked_accuracy", "watermark_accuracy",
            "fingerprint_auth_rate", "leak_identified_rate", "false_claims", "n_clean_models"):
    assert k in rep
  assert rep["watermark_accuracy"] == 1.0 and rep["fingerprint_auth_rate"] == 1.0
  assert rep["leak_identified_rate"] == 1.0 and rep["false_claims"] == 0
  assert rep["clean_accuracy"] > 0.8
  kinds = {(r["method"], r["attack"]) for r in rep["attacks"]}
  for m in ("fingerprint", "logo", "noise", "frontier"):
    assert {(m, a) for a in ("none", "prune", "finetune", "purifier")} <= kinds
  for r in rep["attacks"]:
    assert {"attack", "strength", "task_accuracy", "watermark_accuracy"} <= set(r)
  with open(os.path.join(workdir, "report.json")) as f:
    assert json.load(f)["false_claims"] == 0
  assert os.path.isfile(os.path.join(workdir, "report.md"))
  assert os.path.isfile(os.path.join(workdir, "figures", "keys.png"))
  assert any("[owner] step 150/150" in l for l in lines)
  with open(os.path.join(workdir, "logs", "owner.jsonl")) as f:   # the simulated fine-tune ran
    assert "ft_key_acc" in json.loads(f.read().splitlines()[-1])


def test_rerun_resumes_without_training(tiny):
  workdir, rep, _ = tiny
  lines = []
  again = pipeline.run(tiny_config(), workdir, log=lines.append)
  assert not any("] step " in l for l in lines), lines   # every stage was finished
  assert again["attacks"] == rep["attacks"]


def test_kit_round_trip_and_damage(tiny, tmp_path):
  workdir = tiny[0]
  kit = kit_lib.load_kit(os.path.join(workdir, "kit"))
  assert kit.users == ["ann", "bob"]
  assert all(keys.authenticate(kit.user_keys[u], u).all() for u in kit.users)
  v = kit.verify_checkpoint(os.path.join(workdir, "models", "bob"), user="bob")
  assert v["identified_user"] == "bob" and v["claim_confirmed"]
  with pytest.raises(DeepwmError, match="not registered"):
    kit.verify_checkpoint(os.path.join(workdir, "models", "bob"), user="eve")
  with pytest.raises(DeepwmError, match="not found"):
    kit.load_model(str(tmp_path / "nothing"))
  damaged = tmp_path / "kit"
  subprocess.run(["cp", "-r", os.path.join(workdir, "kit"), str(damaged)], check=True)
  with open(damaged / "kit.json", "a") as f:
    f.write(" ")
  with pytest.raises(DeepwmError, match="altered"):
    kit_lib.load_kit(str(damaged))


def test_cli_exit_codes(tiny, tmp_path, capsys):
  workdir = tiny[0]
  kit, model = os.path.join(workdir, "kit"), os.path.join(workdir, "models")
  assert deepwm("classify", "verify", "--kit", kit, "--model", f"{model}/ann") == 0
  assert "copy of ann" in capsys.readouterr().out
  out = tmp_path / "v.json"
  assert deepwm("classify", "verify", "--kit", kit, "--model", f"{model}/ann", "--user", "bob",
                "--json", out) == 1
  assert json.loads(out.read_text())["identified_user"] == "ann"
  assert deepwm("classify", "verify", "--kit", kit, "--model", f"{model}/clean") == 1
  assert deepwm("classify", "verify", "--kit", kit, "--model", f"{model}/ann",
                "--user", "eve") == 2
  assert deepwm("classify", "verify", "--kit", kit, "--model", f"{model}/ann",
                "--config.seed=1") == 2
  assert deepwm("classify", "verify", "--kit", str(tmp_path), "--model", f"{model}/ann") == 2
  assert deepwm("classify", "verify", "--kit", kit, "--model", kit) == 2   # not a model
  assert deepwm("classify", "run", "--config", DIGITS, "--workdir", tmp_path / "w",
                "--config.users=('a','a')") == 2
  assert deepwm("classify", "run", "--config", os.path.join(REPO, "configs", "tiny.py"),
                "--workdir", tmp_path / "w") == 2
  err = capsys.readouterr().err
  assert "deepwm classify: error: user 'eve' is not registered" in err


def test_cli_subprocess_error_is_one_line(tiny, tmp_path):
  damaged = tmp_path / "kit"
  subprocess.run(["cp", "-r", os.path.join(tiny[0], "kit"), str(damaged)], check=True)
  os.remove(damaged / "kit.json")
  p = subprocess.run([sys.executable, "-m", "deepwm_jax.cli", "classify", "verify", "--kit",
                      str(damaged), "--model", os.path.join(tiny[0], "models", "ann")],
                     capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert p.returncode == 2
  assert p.stderr.strip().count("\n") == 0 and "incomplete" in p.stderr


# ----------------------------------------------------------------------------- config, data


@pytest.mark.parametrize("override, message", [
    ("users=('a','a')", "duplicates"), ("users=('a b',)", "user id"),
    ("data.image_size=12", "multiple of 4"), ("key_samples.pattern_cells=3", "divide"),
    ("data.source=mnist", "tfds:NAME"), ("train.finetune_sim.steps=-1", "finetune_sim.steps"),
    ("train.finetune_sim.lrs=(0.0,)", "finetune_sim.lrs")])
def test_bad_config_is_refused(override, message):
  cfg = config_lib.load(DIGITS)
  config_lib.apply_overrides(cfg, [override])
  with pytest.raises(DeepwmError, match=message):
    config.validate(cfg)
