"""Study configs: kept to reproduce measurements that docs/method.md, docs/zoo.md and
docs/verdicts.md report, not for new runs. Run one with `--config studies/NAME` or
`--config configs/studies/NAME.py`.

Each loads one parent at most (`from deepwm_jax.configs import quickstart`) and writes out
every change it makes.

  quickstart_cnn: the quickstart with a plain-CNN (content-dependent) embedder
  quickstart_cnn_s2: that, with stage 2 against a U-Net and a CNN surrogate: the two-family kit
  quickstart_payload_cnn: the 64-bit owner message with the plain-CNN embedder
"""
