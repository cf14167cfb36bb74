"""Classifier watermarking with an additional class and LSB-steganographic key images
(Sun et al., docs/classify.md), with user-specific key sets so a leaked copy is attributed.

  deepwm classify run --config configs/classify_digits.py --workdir runs/cls
  deepwm classify verify --kit runs/cls/kit --model runs/cls/models/user0 [--user user0]
"""
