"""The false-claim study (issue 9): a thin wrapper over deepwm_jax/studies/false_claims.py.

  python benchmarks/false_claims.py --kit runs/qs_payload/kit --workdir runs/fc
"""
import sys

from deepwm_jax.studies import false_claims

if __name__ == "__main__":
  sys.exit(false_claims.main())
