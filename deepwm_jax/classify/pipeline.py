"""`deepwm classify run`: the additional-class watermark with user fingerprints, end to end.

  data and key images -> the owner's stack (one copy per user, clean null models, the logo and
  noise baselines, the clean base of frontier stitching) -> frontier stitching -> the null
  calibration and the kit -> verification of every copy and every evaluation null -> attacks
  (pruning, fine-tuning, the purifier) on user 0's copy and on each baseline -> report.

Training stages checkpoint through deepwm_jax.train.loop, and evaluated attack results are
kept in WORKDIR/results/, so re-running the command resumes and skips finished work.
"""
import json
import os
import time
import zlib

import jax
import numpy as np

from deepwm_jax.classify import attacks, baselines, data, keys, models, train, verify
from deepwm_jax.classify import kit as kit_lib
from deepwm_jax.classify import report as report_lib
from deepwm_jax.report import to_jsonable, write_text_atomic
from deepwm_jax.train import loop, optim

METHOD = "fingerprint"   # the method's rows in the attack table


class Run:
  def __init__(self, cfg, workdir: str, log=print):
    self.cfg, self.workdir, self.log = cfg, os.path.abspath(workdir), log
    self.timing: dict[str, float] = {}
    self.net = models.classifier(cfg)
    self.num_outputs = cfg.data.num_classes + 1
    self.wm_class = cfg.data.num_classes
    self.predictor = train.Predictor(self.net)
    self.timing.update(self._train_seconds())   # stages finished by earlier invocations

  def _train(self, name, step, state, batch_fn, steps):
    t = time.time()
    state = loop.run(name, step, state, batch_fn, steps, self.workdir,
                     jax.random.PRNGKey(zlib.crc32(name.encode())),
                     log_every=self.cfg.log_every, ckpt_every=self.cfg.ckpt_every, log=self.log)
    # Summed over invocations, so a resumed or re-run command still reports what training
    # cost in all (a finished stage adds only its restore).
    spent = self._train_seconds()
    spent[name] = round(spent.get(name, 0.0) + time.time() - t, 2)
    write_text_atomic(self._train_seconds_path, json.dumps(spent, indent=1))
    self.timing[name] = spent[name]
    return state

  @property
  def _train_seconds_path(self) -> str:
    return os.path.join(self.workdir, "results", "train_seconds.json")

  def _train_seconds(self) -> dict:
    if not os.path.exists(self._train_seconds_path):
      return {}
    with open(self._train_seconds_path) as f:
      return json.load(f)

  def _cached(self, name: str, compute):
    """JSON results of a finished piece of work, computed once per workdir."""
    path = os.path.join(self.workdir, "results", f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        return json.load(f)
    value = to_jsonable(compute())
    write_text_atomic(path, json.dumps(value, indent=1))
    return value

  def _init(self, n: int, tag: int):
    spec = models.example_input(self.cfg)
    return models.stack([models.init_params(self.net, spec, [self.cfg.seed, tag, i])["params"]
                         for i in range(n)])

  # --------------------------------------------------------------------------- owner's stack

  def owner_models(self, td: data.TaskData, user_keys: dict, baseline_keys: dict) -> dict:
    """Trains every copy of the owner's stack together; returns name -> params."""
    cfg, o = self.cfg, self.num_outputs
    e = cfg.train.key_batch
    names, extras = [], []
    for u, k in user_keys.items():
      names.append(f"user:{u}")
      extras.append(train.Extra(keys.to_float(k), train.one_hot(np.full(len(k), self.wm_class), o),
                                e // 2, e // 2, finetune_aware=True))
    for i in range(cfg.null.n_calibration):
      names.append(f"null_cal:{i}")
    for i in range(cfg.null.n_evaluation):
      names.append(f"null_eval:{i}")
    extras += [train.Extra()] * (cfg.null.n_calibration + cfg.null.n_evaluation)
    for b in ("logo", "noise"):
      if b in baseline_keys:
        x, y = baseline_keys[b]
        names.append(b)
        extras.append(train.Extra(x, train.one_hot(y, o), e, 0))
    if "frontier" in cfg.baselines.names:
      names.append("frontier_base")
      extras.append(train.Extra())
    decoy_t = np.zeros(o, np.float32)
    decoy_t[:cfg.data.num_classes] = 1.0 / cfg.data.num_classes   # "any digit, not the mark"
    sim = finetune_sim(cfg)
    sampler = train.Sampler(td.train.x, td.train.y, cfg.train.batch, extras, e, o,
                            (cfg.seed, 1), keys.Decoys(cfg), decoy_t,
                            sim.steps if sim else 0, cfg.train.finetune_sim.batch if sim else 0)
    opt = optim.make_optimizer(cfg.train.optimizer, cfg.train.steps)
    self.log(f"[classify] training {len(names)} classifiers together: {len(user_keys)} users, "
             f"{cfg.null.n_calibration + cfg.null.n_evaluation} clean nulls, baselines")
    # The fine-tuning terms (key_margin, weight_noise) reach every member with extra samples:
    # the users' copies and the logo and noise baselines alike; clean models have none.
    # The simulated fine-tune reaches the users' copies only: the baselines stay as published.
    step = train.make_step(self.net, opt, cfg.train.key_weight, cfg.train.get("key_margin", 0.0),
                           cfg.train.get("weight_noise", 0.0), sim)
    state = self._train("owner", step,
                        train.init_state(self._init(len(names), 1), opt), sampler,
                        cfg.train.steps)
    return {n: models.member(state["params"], i) for i, n in enumerate(names)}

  def frontier(self, td: data.TaskData, base_params) -> tuple:
    """Le Merrer et al.: keys from the clean base, then the base fine-tuned on task + keys."""
    cfg, o = self.cfg, self.num_outputs
    kx, ky = baselines.frontier_keys(cfg, self.net, base_params, td.train.x, td.train.y,
                                     self.predictor)
    opt = optim.make_optimizer(cfg.baselines.frontier_optimizer, cfg.baselines.frontier_steps)
    extra = train.Extra(kx, train.one_hot(ky, o), cfg.train.key_batch, 0)
    sampler = train.Sampler(td.train.x, td.train.y, cfg.train.batch, [extra], cfg.train.key_batch,
                            o, (cfg.seed, 2))
    stacked = models.stack([base_params])
    state = self._train("frontier", train.make_step(self.net, opt, cfg.train.key_weight),
                        train.init_state(stacked, opt), sampler, cfg.baselines.frontier_steps)
    return models.member(state["params"], 0), (kx, ky)

  # --------------------------------------------------------------------------- evaluation

  def wm_accuracy(self, params, marks: tuple) -> float:
    """The share of a method's key images (x, labels) the model gives their watermark label."""
    x, y = marks
    return float(np.mean(self.predictor.classes(params, x) == y))

  def calibrate(self, models_: list, user_keys: dict) -> verify.NullCalibration:
    """How often clean models send any registered user's key image to the extra class."""
    counts = [hc for p in models_ for hc in verify.query(
        lambda x: self.predictor.classes(p, x), user_keys, self.wm_class).values()]
    return verify.calibrate(counts, len(models_))

  def attack_rows(self, targets: dict, marks: dict, td: data.TaskData, kit) -> list[dict]:
    """Every attack on every target (user 0's copy and each baseline)."""
    cfg = self.cfg
    user0 = cfg.users[0]
    base = {m: self.predictor.accuracy(p, td.test.x, td.test.y) for m, p in targets.items()}

    def row(method, attack, strength, params, front=None, **extra):
      """One attacked model; `front` is an input filter the attacker put before the model,
      which the verifier's queries pass through too."""
      front = front or (lambda x: x)
      kx, ky = marks[method]
      classes = lambda x: self.predictor.classes(params, front(x))
      acc = float(np.mean(classes(td.test.x) == td.test.y))
      r = {"method": method, "attack": attack, "strength": strength, "task_accuracy": acc,
           "watermark_accuracy": float(np.mean(classes(kx) == ky)),
           "task_drop": base[method] - acc, **extra}
      if method == METHOD:
        v = kit.verify(classes)
        r.update(identified=v["identified_user"] == user0,
                 p_value=next(u["p_value"] for u in v["users"] if u["user"] == user0))
      return r

    rows = [row(m, "none", "-", p) for m, p in targets.items()]
    t = time.time()
    for m, p in targets.items():
      for f in cfg.attacks.prune.fractions:
        rows.append(row(m, "prune", f"{f:.0%}", attacks.prune(p, f), fraction=f))
    self.timing["prune"] = round(time.time() - t, 2)
    rows += self.finetune_rows(targets, td, row)
    rows += self.purifier_rows(targets, marks, td, row)
    return rows

  def finetune_rows(self, targets: dict, td: data.TaskData, row) -> list[dict]:
    cfg, ft = self.cfg, self.cfg.attacks.finetune
    names = [(m, lr) for m in targets for lr in ft.lrs]
    stacked = models.stack([targets[m] for m, _ in names])
    opt = attacks.finetune_optimizer()
    step = train.make_step(self.net, opt)
    sampler = train.Sampler(td.attack.x, td.attack.y, ft.batch, len(names), 0, self.num_outputs,
                            (cfg.seed, 3))
    init = train.init_state(stacked, opt, [lr for _, lr in names])
    rows = []
    # One run of the longest length, evaluated at each shorter one on the way: the loop
    # resumes from the previous length's checkpoint.
    for n_steps in attacks.lengths(ft.steps):
      def compute():
        state = self._train("finetune", step, init, sampler, n_steps)
        return [row(m, "finetune", f"lr {lr:g}, {n_steps} steps",
                    models.member(state["params"], i), lr=lr, steps=n_steps)
                for i, (m, lr) in enumerate(names)]
      rows += self._cached(f"finetune_{n_steps}", compute)
    return rows

  def purifier_rows(self, targets: dict, marks: dict, td: data.TaskData, row) -> list[dict]:
    def compute():
      cfg, pc = self.cfg, self.cfg.attacks.purifier
      net = attacks.Purifier(cfg.data.channels, pc.width)
      opt = optim.make_optimizer(pc.optimizer, pc.steps)
      sampler = train.Sampler(td.attack.x, td.attack.y, pc.batch, 1, 0, self.num_outputs,
                              (cfg.seed, 4))
      batch_fn = lambda s: {"x": sampler(s)["x"][0]}
      state = self._train("purifier", attacks.make_purifier_step(net, opt),
                          attacks.purifier_state(net, models.example_input(cfg), opt, cfg.seed),
                          batch_fn, pc.steps)
      front = lambda x: attacks.purify(net, state["params"], x)
      mse = float(np.mean((front(td.test.x) - td.test.x) ** 2))
      strength = f"autoencoder {pc.width} ch, {pc.steps} steps"
      return [row(m, "purifier", strength, p, front=front, purifier_mse=mse)
              for m, p in targets.items()]
    return self._cached("purifier", compute)


def finetune_sim(cfg) -> train.FinetuneSim | None:
  """train.finetune_sim as the step's FinetuneSim, or None when it is off."""
  fs = cfg.train.get("finetune_sim")
  if not fs or not fs.steps:
    return None
  return train.FinetuneSim(int(fs.steps), tuple(float(lr) for lr in fs.lrs), float(fs.weight),
                           bool(fs.second_order), float(fs.get("margin", 0.0)))


def run(cfg, workdir: str, log=print) -> dict:
  t0 = time.time()
  r = Run(cfg, workdir, log)
  os.makedirs(r.workdir, exist_ok=True)
  t = time.time()
  td = data.load(cfg)
  users = list(cfg.users)
  user_keys = {u: keys.user_keys(cfg, u) for u in users}
  baseline_keys = {}
  if "logo" in cfg.baselines.names:
    baseline_keys["logo"] = baselines.logo_keys(cfg, td.train.x, td.train.y)
  if "noise" in cfg.baselines.names:
    baseline_keys["noise"] = baselines.noise_keys(cfg, td.train.x, td.train.y)
  r.timing["data"] = round(time.time() - t, 2)
  log(f"[classify] {len(td.train.y)} training, {len(td.attack.y)} attacker and "
      f"{len(td.test.y)} test images at {cfg.data.image_size} px; {len(users)} users x "
      f"{cfg.key_samples.n_per_user} key images")

  trained = r.owner_models(td, user_keys, baseline_keys)
  if "frontier" in cfg.baselines.names:
    trained["frontier"], baseline_keys["frontier"] = r.frontier(td, trained["frontier_base"])

  # The copies handed out, and one clean model to show what "not detected" looks like.
  t = time.time()
  for u in users:
    kit_lib.save_model(os.path.join(r.workdir, "models", u), trained[f"user:{u}"])
  kit_lib.save_model(os.path.join(r.workdir, "models", "clean"), trained["null_eval:0"])
  for b in cfg.baselines.names:
    kit_lib.save_model(os.path.join(r.workdir, "models", f"baseline_{b}"), trained[b])

  cal_names = [f"null_cal:{i}" for i in range(cfg.null.n_calibration)]
  eval_names = [f"null_eval:{i}" for i in range(cfg.null.n_evaluation)]
  calibration = r.calibrate([trained[n] for n in cal_names], user_keys)
  kit_lib.write_kit(os.path.join(r.workdir, "kit"), cfg, user_keys, calibration)
  kit = kit_lib.load_kit(os.path.join(r.workdir, "kit"))   # verify through what is kept
  verdicts = {n: kit.verify(kit_lib.classes_fn(cfg, trained[n]))
              for n in [f"user:{u}" for u in users] + eval_names}
  acc = {n: r.predictor.accuracy(p, td.test.x, td.test.y) for n, p in trained.items()}
  r.timing["verify"] = round(time.time() - t, 2)

  marks = {METHOD: (keys.to_float(user_keys[users[0]]),
                    np.full(cfg.key_samples.n_per_user, r.wm_class))}
  marks.update({b: baseline_keys[b] for b in cfg.baselines.names})
  targets = {METHOD: trained[f"user:{users[0]}"]} | {b: trained[b] for b in cfg.baselines.names}
  attack_rows = r.attack_rows(targets, marks, td, kit)

  baseline_rows = {b: {"task_accuracy": acc[b],
                       "watermark_accuracy": r.wm_accuracy(trained[b], baseline_keys[b]),
                       "clean_model_watermark_accuracy": float(np.mean(
                           [r.wm_accuracy(trained[n], baseline_keys[b]) for n in eval_names]))}
                   for b in cfg.baselines.names}
  rep = summarize(cfg, users, acc, verdicts, cal_names, eval_names, calibration)
  rep.update(attacks=attack_rows, baselines=baseline_rows)
  rep["targets"] = report_lib.targets(rep)
  r.timing["this_invocation"] = round(time.time() - t0, 2)
  rep["timing"] = r.timing
  report_lib.write(r.workdir, rep, user_keys)
  log(f"[classify] report: {os.path.join(r.workdir, 'report.md')}; kit: {kit.path}")
  return rep


def summarize(cfg, users: list, acc: dict, verdicts: dict, cal_names: list, eval_names: list,
              calibration: verify.NullCalibration) -> dict:
  """The report's headline numbers from the verdicts on every copy and evaluation null."""
  def own(u):
    return next(x for x in verdicts[f"user:{u}"]["users"] if x["user"] == u)

  def others(u):
    return [x for x in verdicts[f"user:{u}"]["users"] if x["user"] != u]

  clean_names = cal_names + eval_names
  return {
      "clean_accuracy": float(np.mean([acc[f"user:{u}"] for u in users])),
      "unwatermarked_accuracy": float(np.mean([acc[n] for n in clean_names])),
      "watermark_accuracy": float(np.mean([own(u)["watermark_accuracy"] for u in users])),
      "fingerprint_auth_rate": float(np.mean([own(u)["fingerprint_auth_rate"] for u in users])),
      "leak_identified_rate": float(np.mean([verdicts[f"user:{u}"]["identified_user"] == u
                                             for u in users])),
      "false_claims": int(sum(verdicts[n]["detected"] for n in eval_names)),
      "n_clean_models": len(eval_names),
      "n_users": len(users),
      "users": [{"user": u, "task_accuracy": acc[f"user:{u}"],
                 **{k: own(u)[k] for k in ("watermark_accuracy", "p_value",
                                           "fingerprint_auth_rate", "detected")},
                 "identified_user": verdicts[f"user:{u}"]["identified_user"],
                 "other_users_max_accuracy": max([x["watermark_accuracy"] for x in others(u)],
                                                 default=0.0)}
                for u in users],
      "cross_accuracy": {u: {x["user"]: x["watermark_accuracy"]
                             for x in verdicts[f"user:{u}"]["users"]} for u in users},
      "nulls": [{"model": n, "task_accuracy": acc[n], "detected": verdicts[n]["detected"],
                 "max_watermark_accuracy": max(x["watermark_accuracy"]
                                               for x in verdicts[n]["users"]),
                 "min_p_value": min(x["p_value"] for x in verdicts[n]["users"])}
                for n in eval_names],
      "clean_model_accuracies": [acc[n] for n in clean_names],
      "calibration": calibration.to_dict(),
      "alpha": cfg.verify.alpha, "min_accuracy": cfg.verify.min_accuracy,
      "max_task_drop": cfg.attacks.max_task_drop,
  }
