"""QUIP's random number generator (libAtoms ``System.f95``), reproduced bit for bit.

* ``ran()``: Park–Miller minimal standard, ``idum ← 16807·idum mod (2³¹−1)`` (Schrage's method,
  ``System.f95:2659-2675``; for any ``idum`` it equals Python's ``(16807*idum) % M``);
* ``ran_uniform()`` = ``ran()/RAN_MAX`` with ``RAN_MAX = 2³¹−1`` (``:2678-2689``);
* ``ran_normal()``: Marsaglia's polar method, first variate only (``:2692-2701``)::

      r = 2;  while r > 1:  v1 = 2u − 1;  v2 = 2u − 1;  r = v1² + v2²
      return v1 · sqrt((−2·log r)/r)

  evaluated with the C library's scalar ``log``/``sqrt`` (``math``), which gives QUIP's bits (a
  vectorised ``np.log`` may differ by an ulp);
* ``system_reseed_rng(s)`` sets ``idum = s`` and discards 100 draws (``:2458-2489``, ``:2644-2649``).

gap_fit seeds the stream with ``rnd_seed``; the ``uniform`` fill and ``cur_points`` draw from it
(:class:`QuipRandom`).  The soap descriptor's random mixing matrices re-seed a generator of their
own with seeds that may be zero or negative (:class:`ParkMiller`); see
docs/dev/soap_compression.md §2.1.  Both live here, below the descriptors and the sparse layer.
"""

from __future__ import annotations

import functools
import math

import numpy as np

RAN_A = 16807
RAN_M = 2147483647
#: draws discarded after every (re)seeding (system_set_random_seeds)
WARM_UP = 100
INT32 = (-2 ** 31, 2 ** 31 - 1)


def seed_problem(seed: int) -> str | None:
    """Why QUIP cannot use ``seed`` (None if it can): outside a default Fortran integer, or ≡ 0 mod 2³¹−1
    (``ran()`` aborts: "linear-congruential random number generators fail with seed idum=0")."""
    if not INT32[0] <= seed <= INT32[1]:
        return "outside the 32-bit integers QUIP computes seeds in"
    if seed % RAN_M == 0:
        return "a multiple of 2^31-1, which QUIP's generator cannot use (idum = 0)"
    return None


@functools.lru_cache(maxsize=1)
def _powers(block: int = 1024) -> np.ndarray:
    """A^1 ... A^block mod M."""
    powers = np.empty(block, dtype=np.int64)
    p = 1
    for i in range(block):
        p = (p * RAN_A) % RAN_M
        powers[i] = p
    return powers


class ParkMiller:
    """QUIP's master stream: ``idum`` and the draws of ``ran_uniform``/``ran_normal``.

    ``ParkMiller(seed)`` is ``system_reseed_rng(seed)``: ``idum = seed`` then 100 draws discarded.
    Any seed :func:`seed_problem` accepts (zero and negative ones too) is allowed.
    """

    A, M = RAN_A, RAN_M

    def __init__(self, seed: int):
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """``system_reseed_rng(seed)``."""
        problem = seed_problem(int(seed))
        if problem:
            raise ValueError(f"random seed {seed}: {problem}")
        self.idum = int(seed) % self.M  # the same stream: A·s ≡ A·(s mod M)
        self.quip_skip(WARM_UP)

    def quip_uniform(self, n: int | None = None):
        """The next ``n`` values of QUIP's ran_uniform() (idum/(2^31−1)); one float if n is None."""
        if n is None:
            self.idum = (self.A * self.idum) % self.M
            return self.idum / self.M
        if n == 0:
            return np.zeros(0)
        # x_k = x_0 A^k mod M, vectorised in blocks (products stay below 2^62)
        powers = _powers()
        block = powers.size
        a_block = int(powers[-1])
        out = np.empty(n, dtype=np.int64)
        x = self.idum
        for start in range(0, n, block):
            m = min(block, n - start)
            out[start:start + m] = (x * powers[:m]) % self.M
            x = (x * a_block) % self.M
        self.idum = int(out[-1])
        return out / self.M

    def quip_normal(self, n: int) -> np.ndarray:
        """The next ``n`` values of QUIP's ran_normal() (each consumes an even number ≥ 2 of uniforms)."""
        out = np.empty(n)
        log, sqrt, uniform = math.log, math.sqrt, self.quip_uniform
        for k in range(n):
            r = 2.0
            while r > 1.0:
                v1 = 2.0 * uniform() - 1.0
                v2 = 2.0 * uniform() - 1.0
                r = v1 * v1 + v2 * v2
            out[k] = v1 * sqrt(-2.0 * log(r) / r)
        return out

    def quip_peek(self, n: int) -> np.ndarray:
        """The next ``n`` values of :meth:`quip_uniform` without drawing them."""
        idum = self.idum
        values = self.quip_uniform(n)
        self.idum = idum
        return values

    def quip_skip(self, n: int) -> None:
        """Advance the stream by ``n`` draws."""
        self.idum = (self.idum * pow(self.A, int(n), self.M)) % self.M


class QuipRandom(ParkMiller):
    """QUIP's random stream as gap_fit seeds it with ``rnd_seed`` (positive), 100 draws discarded.

    ``uniform``'s random fill and ``cur_points`` draw from it, so with the same seed and
    candidates gapfit makes gap_fit's choices.  Other NumPy ``Generator`` methods (used by
    methods whose gap_fit random stream is not reproduced) are delegated to a NumPy generator
    seeded with the same seed.
    """

    def __init__(self, seed: int):
        if seed <= 0:
            raise ValueError("QUIP's generator needs a positive seed")
        self.seed = int(seed)
        self.numpy = np.random.default_rng(seed)
        self.idum = int(seed)  # any positive integer, as before (gap_fit's rnd_seed)
        self.quip_skip(WARM_UP)

    @staticmethod
    def _powers(block: int = 1024) -> np.ndarray:
        return _powers(block)

    def __getattr__(self, name):
        if name == "numpy":  # not set (an instance made by __new__): no recursion
            raise AttributeError(name)
        return getattr(self.numpy, name)
