"""The false-claim study: a thin wrapper over deepwm_jax/tools/false_claims.py.

  python benchmarks/false_claims.py --kit runs/qs_payload/kit --workdir runs/fc
"""
import sys

from deepwm_jax.tools import false_claims

if __name__ == "__main__":
  sys.exit(false_claims.main())
