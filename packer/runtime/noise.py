"""The portable seeded noise generator of formats/README.md ("Seeded noise").

Philox4x32-10 (Salmon et al., SC'11) in counter mode, keyed by the 64-bit seed, feeds Box-Muller
in float64; results are rounded to float32. The browser runtime implements the same steps, so a
seed gives the same initial latents everywhere.
"""

from __future__ import annotations

import numpy as np

from packer.support import spec

GENERATOR, VERSION = spec.NOISE_GENERATOR, spec.NOISE_VERSION  # what this module implements

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
_LO = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


def philox4x32_10(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Apply Philox4x32-10 to ``counters`` (uint32, shape [n, 4]) under ``key`` (two uint32)."""
    c = [counters[:, i].astype(np.uint64) for i in range(4)]
    k0, k1 = np.uint32(key[0]), np.uint32(key[1])
    for round_ in range(10):
        if round_:
            k0, k1 = np.uint32(k0 + _W0), np.uint32(k1 + _W1)
        p0, p1 = _M0 * c[0], _M1 * c[2]
        c = [
            (p1 >> _SHIFT) ^ c[1] ^ np.uint64(k0),
            p1 & _LO,
            (p0 >> _SHIFT) ^ c[3] ^ np.uint64(k1),
            p0 & _LO,
        ]
    return np.stack(c, axis=1).astype(np.uint32)


def uint32_stream(seed: int, blocks: int, stream: int = 0) -> np.ndarray:
    """``blocks`` Philox outputs (uint32 [blocks, 4]) for counters 0, 1, ... under ``seed``.

    ``stream`` (counter word 2) separates independent sequences of one seed: 0 for the initial
    latents, ``i + 1`` for the noise an ancestral sampler adds at step ``i``.
    """
    if not 0 <= seed < 2**64:
        raise ValueError("seed must be in [0, 2**64)")
    if not 0 <= stream < 2**32:
        raise ValueError("stream must be in [0, 2**32)")
    index = np.arange(blocks, dtype=np.uint64)
    counters = np.zeros((blocks, 4), dtype=np.uint32)
    counters[:, 0] = (index & _LO).astype(np.uint32)
    counters[:, 1] = (index >> _SHIFT).astype(np.uint32)
    counters[:, 2] = stream
    with np.errstate(over="ignore"):
        return philox4x32_10(counters, (seed & 0xFFFFFFFF, seed >> 32))


def standard_normal(seed: int, count: int, stream: int = 0) -> np.ndarray:
    """``count`` float32 standard normals for ``seed``: the spec's sequence, in order."""
    bits = uint32_stream(seed, -(-count // 4), stream).astype(np.float64).reshape(-1, 2, 2)
    u1 = (bits[:, :, 0] + 1.0) / 4294967296.0  # (0, 1]
    u2 = bits[:, :, 1] / 4294967296.0  # [0, 1)
    radius = np.sqrt(-2.0 * np.log(u1))
    theta = 2.0 * np.pi * u2
    pairs = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=-1)
    return pairs.reshape(-1)[:count].astype(np.float32)


def latents(seed: int, shape: tuple[int, ...], stream: int = 0) -> np.ndarray:
    """Latent-shaped noise (C order) for ``seed``: stream 0 is the initial latents (before
    scaling by the scheduler's init sigma), stream ``i + 1`` an ancestral sampler's step ``i``."""
    return standard_normal(seed, int(np.prod(shape)), stream).reshape(shape)
