"""The protection stages of `deepwm run`, one module each; deepwm_jax/pipeline.py composes them.

  task       the target model M and its outputs on every split
  barrier    stage 1: embedder H, extractor R and discriminator D trained together
  attack     the surrogates stage 2 hardens R against, and the protector's null models
  harden     stage 2: R fine-tuned on the surrogates' outputs (H frozen)
  calibrate  the per-image threshold, the held-out null and the model-level null
  model_null the model-level null: small models trained on clean pairs
  evaluate   independent evaluation models, the held-out groups and the report's numbers
  absorb     the model-specific strategy: H absorbed into the task network M'
  traditional  the DCT spread-spectrum baseline (no H or R)
  common     what the stages share: the runner that trains and checkpoints a stage, batches,
             batched prediction, the group summary
"""
