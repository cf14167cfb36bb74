"""The false-claim zoo: 34 innocent imitators of 10 architecture settings and 4 losses; none saw
the watermark, so a kit must detect none of them.

  deepwm attack --kit runs/keyed/kit --config configs/zoo_innocent.py --workdir runs/innocent

U-Nets of two depths, with batch or instance norm and residual, sigmoid or [-1, 1]-tanh
outputs; ResNets of 1, 6 and 9 blocks; SRCNN- and DnCNN-like CNNs; EDSR; trained on clean
(A, M(A)) or, four of them, on the photos themselves (A, B). Each member's outputs
are judged as they are and after the eight post-processings of a run's after-serving study
(306 sets in all), and serving four held-out photos whole. About 30 minutes on a 2-core CPU
(600 steps per model).
"""
from deepwm_jax.zoo.config import base_config


def get_config():
  c = base_config()
  c.archs = dict(
      unet=dict(arch="unet", ngf=16, num_downs=0),
      unet_d3=dict(arch="unet", ngf=8, num_downs=3),
      unet_in_tanh=dict(arch="unet", ngf=16, norm="instance", output="tanh01"),
      unet_sigmoid=dict(arch="unet", ngf=16, output="sigmoid"),
      resnet1=dict(arch="resnet", ngf=16, n_blocks=1),
      resnet6=dict(arch="resnet", ngf=16, n_blocks=6),
      resnet9=dict(arch="resnet", ngf=32, n_blocks=9),   # the reference attacker's depth
      srcnn=dict(arch="cnn", ngf=32, depth=3),
      dncnn=dict(arch="cnn", ngf=16, depth=8),
      edsr=dict(arch="edsr", ngf=16, n_blocks=4))
  c.defaults.update(loss="l2", n_attack=1024, steps=600, batch=16, lr=1e-3, null=True)
  c.sweeps = [
      dict(arch=tuple(c.archs.keys())),                                   # 10
      dict(arch=("unet", "resnet6", "dncnn", "edsr"), loss=("l1", "ssim", "l1+lsgan")),  # 12
      dict(arch=("unet", "unet_in_tanh", "resnet1", "srcnn"), seed=(1, 2)),  # 8
      dict(arch=("unet", "resnet6", "dncnn", "edsr"), truth=(True,)),  # 4, on other data
  ]
  # The post-processings of config.evaluate.served: a claim after serving is a false claim too.
  c.removal.update(attacks=("jpeg:90", "jpeg:75", "jpeg:50", "rescale:0.5", "crop:0.6",
                            "blur:1.0", "noise:0.03", "rescale:0.75+jpeg:75"),
                   members=(), on_nulls=True)
  return c
