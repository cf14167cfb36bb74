"""Benchmarks, studies and kit maintenance: imported only by the CLI and by scripts, never by
the library itself.

  bench, bench_layers, zoo_bench, parallel_bench   how fast the steps run (`deepwm bench`)
  false_claims                                     the false-claim study of a kit
  model_null, recalibrate                          give an existing kit a new null
  describe                                         parameter counts (`deepwm describe`)
  payload_checkpoint, classify_finetune_study      studies of docs/verdicts.md, docs/classify.md
"""
