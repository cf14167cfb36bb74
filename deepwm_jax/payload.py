"""Bit payloads: an owner message, Reed-Solomon protected, drawn as a key-seeded watermark image.

With `watermark.spec = 'payload'` the watermark w that the extractor R learns to output is not a
logo but a rendered message, and `verify` reads the message back:

  message spec -> k = bits/8 data bytes -> Reed-Solomon codeword (k + ecc_bytes bytes, reedsolo)
  -> n = 8 (k + ecc_bytes) coded bits -> XOR a key-seeded whitening sequence (so any message,
  all zeros included, draws a balanced pattern) -> Manchester cells: coded bit j owns two cells
  of a g x g grid of c x c pixel squares, at key-seeded permuted positions; t_j = 1 draws the
  first cell dark (0) and the second white (1), t_j = 0 the reverse. Unused cells stay white.

The blank target is all white, so an extraction of an unwatermarked image reads every bit as
(white - white) = 0: an erasure, not a guess. The soft value of bit j is
  s_j = mean(second cell) - mean(first cell)  in [-1, 1]  (+1: t_j = 1 drawn at full contrast).
Its sign is the hard bit; a bit *matches confidently* when s_j has the right sign and
|s_j| >= CONFIDENT (a faint trace of w in R(clean), docs/verdicts.md, matches nothing).

Config (`watermark.*`, defaults keep the logo):
  spec       'payload' turns this on.
  message    'text:ACME'   UTF-8, at most bits/8 bytes, padded with NUL bytes;
             'hex:00ff..'  at most bits/8 bytes, left-padded with zeros;
             'int:12345'   a non-negative integer below 2**bits, big-endian;
             'owner'       the first bits/8 bytes of SHA-256(owner id, NUL, SHA-256 of the run's
                           config): binds the owner and the parts of the kit fixed before
                           training. (The networks cannot be bound: R is trained to output
                           this very message, so their hash is not known when it is drawn.)
  bits       message length, a multiple of 8 in [32, 256].
  ecc_bytes  Reed-Solomon parity bytes (corrects ecc_bytes/2 wrong bytes, ecc_bytes erasures).
  key        integer seed of the cell permutation and the whitening.
  owner      owner id for 'owner' messages and kit.json ('' = the login name).

The kit stores the message, the cells and the whitening explicitly (not only the key), so a
kit decodes the same under any NumPy version.
"""
import dataclasses
import getpass
import hashlib
import json
import fractions
import math
from typing import Any

import numpy as np
import reedsolo
from scipy import stats as scipy_stats

from deepwm_jax import verdict
from deepwm_jax.errors import DeepwmError

MIN_BITS, MAX_BITS = 32, 256
# A bit matches confidently when its soft value is this much of the full contrast, the right
# way round. Under a null whose soft values are symmetric about 0 a confident match has
# probability <= 1/2, so the fair-bit binomial stays a valid (conservative) bound.
CONFIDENT = 0.3
# How many images the report decodes the message from (a set of 16 outputs).
DECODE_IMAGES = 16


# ----------------------------------------------------------------------------- the message


def owner_digest(owner: str, config: dict) -> bytes:
  """SHA-256(owner, NUL, SHA-256(canonical config JSON)): what an 'owner' message carries."""
  canonical = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
  return hashlib.sha256(owner.encode() + b"\0" + hashlib.sha256(canonical).digest()).digest()


def message_bytes(spec: str, bits: int, owner: str = "", config: dict | None = None) -> bytes:
  """The k = bits/8 data bytes a message spec stands for (see the module docstring)."""
  k = bits // 8
  if not isinstance(spec, str):
    raise DeepwmError(f"watermark.message must be a string, got {spec!r}")
  kind, sep, body = spec.partition(":")
  if spec == "owner":
    if not owner:
      raise DeepwmError("watermark.message 'owner' needs an owner id; set watermark.owner")
    return owner_digest(owner, config or {})[:k]
  if not sep or kind not in ("text", "hex", "int"):
    raise DeepwmError(f"watermark.message {spec!r} has no known format; use 'text:ACME', "
                      f"'hex:00ff...', 'int:12345' or 'owner'")
  if kind == "text":
    data = body.encode("utf-8")
    if not data:
      raise DeepwmError("watermark.message 'text:' is empty; give some text, e.g. 'text:ACME'")
    if len(data) > k:
      raise DeepwmError(f"watermark.message {spec!r} is {len(data)} bytes, but {bits} bits "
                        f"hold {k}; shorten it or raise watermark.bits (at most {MAX_BITS})")
    return data + b"\0" * (k - len(data))
  if kind == "hex":
    digits = body[2:] if body.lower().startswith("0x") else body
    if len(digits) % 2:
      digits = "0" + digits
    try:
      data = bytes.fromhex(digits)
    except ValueError:
      raise DeepwmError(f"watermark.message {spec!r} is not hexadecimal; e.g. 'hex:00ff17'") \
          from None
    if not data or len(data) > k:
      raise DeepwmError(f"watermark.message {spec!r} needs 1 to {k} bytes for {bits} bits, "
                        f"got {len(data)}")
    return b"\0" * (k - len(data)) + data
  try:
    value = int(body, 0)
  except ValueError:
    raise DeepwmError(f"watermark.message {spec!r} is not an integer; e.g. 'int:12345'") \
        from None
  if not 0 <= value < 2 ** bits:
    raise DeepwmError(f"watermark.message {spec!r} must be in [0, 2**{bits}); raise "
                      f"watermark.bits or use a smaller number")
  return value.to_bytes(k, "big")


def show_message(data: bytes, spec: str) -> str:
  """How to print decoded bytes: as the spec's kind (text / int / hex)."""
  kind = spec.partition(":")[0]
  if kind == "text":
    try:
      return "text:" + data.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
      pass
  if kind == "int":
    return f"int:{int.from_bytes(data, 'big')}"
  return "hex:" + data.hex()


# ----------------------------------------------------------------------------- the layout


@dataclasses.dataclass(frozen=True)
class Payload:
  """A message and where its coded bits live in the watermark image."""
  message: str          # the spec as configured
  data: bytes           # k data bytes
  ecc_bytes: int
  key: int
  image_size: int
  cell: int             # side of a cell in pixels
  cells: np.ndarray     # [n, 2] cell indices (row-major in the grid) of each coded bit
  whitening: np.ndarray  # [n] 0/1

  @property
  def bits(self) -> int:
    return 8 * len(self.data)

  @property
  def grid(self) -> int:
    return self.image_size // self.cell

  @property
  def n_coded(self) -> int:
    return len(self.whitening)

  @property
  def codec(self) -> reedsolo.RSCodec:
    return reedsolo.RSCodec(self.ecc_bytes)

  @property
  def coded_bits(self) -> np.ndarray:
    """The codeword's bits, MSB first: [n] uint8."""
    return np.unpackbits(np.frombuffer(bytes(self.codec.encode(self.data)), np.uint8))

  @property
  def channel_bits(self) -> np.ndarray:
    """What is drawn: coded bits XOR whitening."""
    return self.coded_bits ^ self.whitening

  def render(self, channels: int) -> np.ndarray:
    """The watermark image: [S, S, channels] float32, white where no dark cell is."""
    g, c = self.grid, self.cell
    values = np.ones(g * g, np.float32)
    t = self.channel_bits
    values[self.cells[:, 0]] = 1.0 - t   # t = 1: first cell dark
    values[self.cells[:, 1]] = t         # ... and the second white
    img = np.kron(values.reshape(g, g), np.ones((c, c), np.float32))
    return np.repeat(img[..., None], channels, axis=-1)

  def soft_bits(self, r_NxHxWxC) -> np.ndarray:
    """Soft value of every drawn bit per image, [N, n] in [-1, 1], +1 = t_j = 1 at full
    contrast (to be compared with channel_bits)."""
    r = np.clip(np.asarray(r_NxHxWxC, np.float32), 0.0, 1.0)
    if r.ndim != 4 or r.shape[1] != self.image_size or r.shape[2] != self.image_size:
      raise DeepwmError(f"payload decoding needs extractions [N, {self.image_size}, "
                        f"{self.image_size}, C], got {r.shape}")
    n, g, c = r.shape[0], self.grid, self.cell
    means = r.mean(axis=-1).reshape(n, g, c, g, c).mean(axis=(2, 4)).reshape(n, g * g)
    return means[:, self.cells[:, 1]] - means[:, self.cells[:, 0]]

  def record(self) -> dict[str, Any]:
    """What kit.json stores (everything decoding needs)."""
    return {"message": self.message, "data_hex": self.data.hex(), "bits": self.bits,
            "ecc_bytes": self.ecc_bytes, "key": self.key, "image_size": self.image_size,
            "cell": self.cell, "n_coded": self.n_coded, "confident": CONFIDENT,
            "cells": self.cells.ravel().tolist(),
            "whitening": np.packbits(self.whitening).tobytes().hex()}

  @classmethod
  def from_record(cls, d: dict) -> "Payload":
    try:
      n = int(d["n_coded"])
      whitening = np.unpackbits(np.frombuffer(bytes.fromhex(d["whitening"]), np.uint8))[:n]
      p = cls(message=str(d["message"]), data=bytes.fromhex(d["data_hex"]),
              ecc_bytes=int(d["ecc_bytes"]), key=int(d["key"]),
              image_size=int(d["image_size"]), cell=int(d["cell"]),
              cells=np.asarray(d["cells"], np.int64).reshape(n, 2), whitening=whitening)
    except (KeyError, TypeError, ValueError) as e:
      raise DeepwmError(f"the kit's payload record is invalid ({type(e).__name__}: {e}); "
                        "re-create the kit with `deepwm run`") from None
    if p.n_coded != 8 * (len(p.data) + p.ecc_bytes) or p.cells.max() >= p.grid ** 2:
      raise DeepwmError("the kit's payload record is inconsistent; re-create the kit")
    return p


def make_payload(message: str, bits: int, ecc_bytes: int, key: int, image_size: int,
                 owner: str = "", config: dict | None = None) -> Payload:
  """Encodes `message` and lays it out; refuses what the image cannot hold."""
  if not isinstance(bits, int) or bits % 8 or not MIN_BITS <= bits <= MAX_BITS:
    raise DeepwmError(f"watermark.bits={bits}; use a multiple of 8 from {MIN_BITS} to "
                      f"{MAX_BITS}")
  k = bits // 8
  if not isinstance(ecc_bytes, int) or ecc_bytes < 2 or k + ecc_bytes > 255:
    raise DeepwmError(f"watermark.ecc_bytes={ecc_bytes}; use 2 to {255 - k} (Reed-Solomon "
                      f"codewords are at most 255 bytes)")
  data = message_bytes(message, bits, owner, config)
  n = 8 * (k + ecc_bytes)
  cell = _cell_size(image_size, 2 * n)
  if cell is None:
    raise DeepwmError(
        f"a {bits}-bit payload with {ecc_bytes} parity bytes draws {2 * n} cells, but a "
        f"{image_size}x{image_size} watermark holds {image_size ** 2} (one pixel each); lower "
        f"watermark.bits or watermark.ecc_bytes, or raise data.image_size")
  g = image_size // cell
  cells = np.random.default_rng([int(key), 1]).permutation(g * g)[:2 * n].reshape(n, 2)
  whitening = np.random.default_rng([int(key), 2]).integers(0, 2, n).astype(np.uint8)
  return Payload(message, data, ecc_bytes, int(key), image_size, cell, cells, whitening)


def _cell_size(image_size: int, cells_needed: int) -> int | None:
  """The largest cell side (a divisor of the image size) whose grid has room for every cell."""
  for cell in range(image_size, 0, -1):
    if image_size % cell == 0 and (image_size // cell) ** 2 >= cells_needed:
      return cell
  return None


def owner_of(cfg) -> str:
  """watermark.owner, or the login name when it is empty (what kit.json records as owner)."""
  owner = cfg.watermark.get("owner") if "watermark" in cfg else None
  if owner:
    return str(owner)
  try:
    return getpass.getuser()
  except Exception:
    return "unknown"


def from_config(cfg, owner: str) -> Payload | None:
  """The run's payload, or None when the watermark is not a payload."""
  wm = cfg.watermark
  if wm.spec != "payload":
    return None
  config = json.loads(cfg.to_json_best_effort())
  return make_payload(str(wm.get("message", "owner")), int(wm.get("bits", 64)),
                      int(wm.get("ecc_bytes", 8)), int(wm.get("key", 0)),
                      int(cfg.data.image_size), owner, config)


# ----------------------------------------------------------------------------- decoding


def per_image(p: Payload, soft_NxN: np.ndarray) -> dict[str, np.ndarray]:
  """Per image: raw bit accuracy (hard sign, coded bits) and the confident-match score."""
  agree = np.asarray(soft_NxN) * (2.0 * p.channel_bits - 1.0)
  return {"bit_accuracy": np.mean(agree > 0, axis=1),
          "confident": np.sum(agree >= CONFIDENT, axis=1).astype(np.int64)}


def decode(p: Payload, soft_NxN: np.ndarray) -> dict[str, Any]:
  """Majority vote over images (sum of soft values), then Reed-Solomon.

  Bytes with a tied bit are decoded as erasures; the rest corrects up to (ecc_bytes - erasures)/2
  wrong bytes. Speculative erasures of merely weak bytes were tried and dropped: they made 5%
  of random extractions "decode" to some message. `matches`: the decoded message is the kit's.
  """
  soft = np.asarray(soft_NxN, np.float64)
  votes = np.sum(soft, axis=0)
  coded = (votes > 0).astype(np.uint8) ^ p.whitening
  vote_accuracy = float(np.mean(coded == p.coded_bits))
  word = bytearray(np.packbits(coded).tobytes())
  confidence = np.abs(votes).reshape(-1, 8).min(axis=1)  # per byte: its weakest bit
  order = [int(i) for i in np.argsort(confidence, kind="stable")]
  # A byte with a tied bit (a blank cell pair reads exactly 0) is unknown: always erased. At
  # most ecc_bytes - 2 erasures, so at least one error's worth of redundancy still checks the
  # result (with ecc_bytes erasures any word would "decode").
  tied = int(np.sum(confidence <= 1e-6 * max(1, soft.shape[0])))
  data, erasures = None, 0
  for f in range(tied, p.ecc_bytes - 1, p.ecc_bytes):  # one try, or none when too many ties
    try:
      data = bytes(p.codec.decode(bytearray(word), erase_pos=order[:f] or None)[0])
      erasures = f
      break
    except reedsolo.ReedSolomonError:
      continue
  matches = data == p.data
  return {"n_images": int(soft.shape[0]), "vote_bit_accuracy": vote_accuracy,
          "decoded": data is not None, "erasures": erasures if data is not None else None,
          "message": show_message(data, p.message) if data is not None else None,
          "matches": matches,
          "p_value": message_pvalue(p, bytes(word), order[:erasures]) if matches else 1.0}


def message_pvalue(p: Payload, word: bytes, erased: list[int]) -> float:
  """P(a random word is as close to the kit's codeword as `word`): the message's p-value.

  With m = the codeword's bytes that were not erased and d = how many of them differ between
  `word` and the kit's codeword, it is sum_{i <= d} C(m, i) 255^i / 256^m: the volume of the
  Hamming ball of radius d over all 256^m words. Exact when the non-erased bytes are uniform
  and independent of the message (what the whitening makes of bits that do not depend on the
  key); a decoded match has d <= (ecc_bytes - erasures) / 2, so for 64 bits + 8 parity bytes
  it is at most 2.3e-26 without erasures and 2.1e-21 with 6. The assumption is what an
  innocent model's outputs cannot be shown to meet by the kit alone (R itself was trained to
  draw this pattern, and may draw a trace of it on any image), so the false-claim study checks
  that no innocent set decodes to the kit's message.
  """
  code = bytes(p.codec.encode(p.data))
  gone = set(int(i) for i in erased)
  keep = [i for i in range(len(code)) if i not in gone]
  d = sum(word[i] != code[i] for i in keep)
  m = len(keep)
  ball = sum(math.comb(m, i) * 255 ** i for i in range(d + 1))
  return float(fractions.Fraction(ball, 256 ** m))


def single_image_carried(p: Payload, soft_NxN: np.ndarray) -> bool:
  """Whether the soft vote decodes the kit's message only thanks to one image: dropping some
  single image makes it fail. Measured: R draws the whole pattern faintly on about one output
  in 64 of some innocent null models, and that one image decodes a 16-image set by itself."""
  soft = np.asarray(soft_NxN, np.float64)
  if len(soft) < 2:
    return True
  total = soft.sum(axis=0)
  return any(not decode(p, (total - soft[i])[None])["matches"] for i in range(len(soft)))


def combine(image_p: float, image_rate: float, bits: dict[str, Any], alpha: float,
            min_success_rate: float, message_evidence: bool = False) -> tuple[bool, float, str]:
  """A payload kit's decision from its tests: (detected, p-value, which test decided).

  Test A, the watermark: the image statistic and the bits must both detect (an
    intersection-union test: p_A = max(image p, bit p), each with its majority rule). This is
    the decision unless `message_evidence` is set.
  Test B, the message (only with `message_evidence`): the soft majority vote decodes to the
    kit's message without depending on any single image (`single_image_carried`), p_B =
    `message_pvalue`. Then p = min(1, 2 min(p_A, p_B)) (Bonferroni over the two).
  Off by default: p_B assumes the decoded bits are independent of the message, and the
  false-claim study measured an innocent null model whose 16 outputs decoded the kit's message
  (one output carried it; docs/verdicts.md), so p_B is not a valid p-value for every innocent
  model; the leave-one-out rule removes that case but is not a proof either.
  """
  p_a = max(float(image_p), float(bits["p_value"]))
  rule_a = image_rate >= min_success_rate and bits["success_rate"] >= min_success_rate
  if not message_evidence:
    return bool(rule_a and p_a < alpha), p_a, "watermark" if rule_a and p_a < alpha else "none"
  ok_b = bool(bits["decode_matches"]) and not bits.get("decode_single_image", True)
  p_b = float(bits["decode_p_value"]) if ok_b else 1.0
  p = min(1.0, 2.0 * min(p_a, p_b))
  detected_a = rule_a and 2.0 * p_a < alpha
  detected_b = ok_b and 2.0 * p_b < alpha
  route = ("watermark and message" if detected_a and detected_b else "watermark" if detected_a
           else "message" if detected_b else "none")
  return bool(detected_a or detected_b), p, route


def fair_tail(k: int, n: int) -> float:
  """P(X >= k) for X ~ Binomial(n, 1/2): k confident matches of n independent fair bits."""
  return 1.0 if k <= 0 else float(scipy_stats.binom.sf(k - 1, n, 0.5))


def calibrate_bits(p: Payload, negative_soft, positive_soft=None,
                   margin: float = verdict.DEFAULT_MARGIN,
                   heldout_soft=None) -> verdict.Calibration:
  """Per-image threshold on the confident-match fraction, calibrated like the image statistic
  and then raised until the fair-bit tail at it is no larger than the conformal p0.

  p0 (the per-image false-positive rate) is the largest of the conformal estimate from the
  negatives, the same from `heldout_soft` (negatives stage 2 never saw, as for the image
  statistic) when given, and the fair-bit binomial tail at the threshold: bits of an innocent
  model need not be fair (a faint trace of w, an extractor bias), and few negatives cannot
  vouch for a tiny p0.
  """
  n = p.n_coded
  neg = per_image(p, negative_soft)["confident"] / n
  pos = None if positive_soft is None else per_image(p, positive_soft)["confident"] / n
  cal = verdict.calibrate(neg, pos, margin=margin)
  k = max(0, math.ceil(cal.threshold * n - 1e-9))
  while k < n and fair_tail(k, n) > cal.p0:
    k += 1
  threshold = max(cal.threshold, k / n)
  n_above = int(np.sum(neg >= threshold))
  conformal = (n_above + 1) / (neg.size + 1)
  cal = dataclasses.replace(
      cal, threshold=float(threshold), n_negatives_above=n_above,
      p0=float(max(conformal, fair_tail(math.ceil(threshold * n - 1e-9), n))),
      method=cal.method + "; raised to where the fair-bit tail <= conformal p0; "
      "p0 = max(conformal, fair-bit tail)")
  return cal if heldout_soft is None else with_heldout_bits(p, cal, heldout_soft)


def with_heldout_bits(p: Payload, cal: verdict.Calibration,
                      heldout_soft) -> verdict.Calibration:
  """The bit calibration with p0 also bounded by the held-out negatives' conformal estimate."""
  held = per_image(p, heldout_soft)["confident"] / p.n_coded
  k = int(np.sum(held >= cal.threshold))
  return dataclasses.replace(
      cal, n_heldout=int(held.size), n_heldout_above=k, max_heldout=float(np.max(held)),
      p0=float(max(cal.p0, (k + 1) / (held.size + 1))),
      method=cal.method + f", and the held-out conformal ({k} of {held.size} at or over)")


def decide(p: Payload, soft_NxN: np.ndarray, calibration: verdict.Calibration,
           alpha: float, min_success_rate: float) -> dict[str, Any]:
  """The payload verdict of one suspect set.

  Two p-values, the larger decides (the more conservative):
    p_fair        exact binomial tail of all confident matches over N x n coded bits under
                  independent fair bits;
    p_calibrated  binomial tail of the images over the calibrated per-image threshold with
                  the calibrated p0 (which accounts for bits of innocent models being unfair).
  Detected: p < alpha and at least `min_success_rate` of the images over the threshold.
  """
  soft = np.asarray(soft_NxN, np.float64)
  if soft.ndim != 2 or soft.shape[0] == 0 or soft.shape[1] != p.n_coded:
    raise DeepwmError(f"payload decision needs soft bits [N >= 1, {p.n_coded}], got "
                      f"{soft.shape}")
  pi = per_image(p, soft)
  n_img, n = soft.shape
  fraction = pi["confident"] / n
  image_verdict = verdict.decide(fraction, calibration, alpha, min_success_rate=min_success_rate)
  p_fair = fair_tail(int(pi["confident"].sum()), n_img * n)
  p_value = max(p_fair, image_verdict.p_value)
  out = {
      "detected": bool(p_value < alpha and image_verdict.success_rate >= min_success_rate),
      "p_value": p_value, "p_fair": p_fair, "p_calibrated": image_verdict.p_value,
      "n_images": n_img, "n_hits": image_verdict.n_hits,
      "success_rate": image_verdict.success_rate, "threshold": calibration.threshold,
      "p0": calibration.p0, "bit_accuracy_mean": float(np.mean(pi["bit_accuracy"])),
      "bit_accuracy_min": float(np.min(pi["bit_accuracy"])),
      "confident_mean": float(np.mean(fraction)),
      "bits": p.bits, "n_coded": n, **{f"decode_{k}": v for k, v in decode(p, soft).items()},
      "decode_single_image": None,
      "kit_message": show_message(p.data, p.message), "kit_message_spec": p.message,
  }
  if out["decode_matches"]:
    out["decode_single_image"] = single_image_carried(p, soft)
  return out


def group_summary(p: Payload, soft: np.ndarray, calibration: verdict.Calibration, alpha: float,
                  min_success_rate: float) -> dict[str, Any]:
  """The report's payload row of one group: the verdict on all images, and the message decoded
  from the first DECODE_IMAGES images alone (a set of 16 outputs)."""
  out = decide(p, soft, calibration, alpha, min_success_rate)
  m = min(DECODE_IMAGES, len(soft))
  first = decide(p, soft[:m], calibration, alpha, min_success_rate)
  out.update({f"first_{k}": first[k] for k in ("n_images", "p_value", "detected",
                                                "decode_decoded", "decode_matches")})
  return out


def from_kit_info(info: dict) -> tuple[Payload, verdict.Calibration]:
  """The payload and its bit calibration from kit.json; a payload without one is refused."""
  record = info["payload"]
  if not isinstance(record, dict) or "calibration" not in record:
    raise DeepwmError("the kit's payload has no bit calibration (an older or damaged kit); "
                      "re-create it with `deepwm run`")
  return Payload.from_record(record), verdict.Calibration.from_dict(record["calibration"])


def binding(info: dict) -> bool | None:
  """Whether an 'owner' message equals SHA-256(kit owner, kit config): None for other messages."""
  record = info.get("payload") or {}
  if record.get("message") != "owner":
    return None
  k = int(record.get("bits", 0)) // 8
  return owner_digest(str(info.get("owner", "")), info.get("config", {}))[:k].hex() == \
      record.get("data_hex")
