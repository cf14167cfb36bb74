"""The surrogate zoo: many attackers trained in parallel against a kit (`deepwm attack`).

grid.py    the config's sweeps -> members -> groups      train.py  stacked, vmapped, sharded
data.py    what the attacker sees (A, B')                 run.py    orchestration and resume
archs.py   surrogate families                             report.py report.json / report.md
perceptual.py  VGG16 features from a user file            bench.py  vmapped vs sequential
"""
