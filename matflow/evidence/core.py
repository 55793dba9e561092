"""Dempster–Shafer mass functions as dense numpy arrays, vectorised over many candidates at once.

A mass function on a frame of ``n`` hypotheses is a vector of length ``2**n`` indexed by the
bitmask of the focal set (bit ``i`` set means hypothesis ``i`` is in the set; index 0 is the empty
set, index ``2**n - 1`` the whole frame Ω). Arrays of shape ``(..., 2**n)`` hold one mass
function per leading index, so screening 10⁵ candidate alloys is one call, not a Python loop.

Every pairwise combination rule here is "multiply every focal set of one source with every focal
set of the other and send the product to a target set"; only the target differs between rules
(A∩B for the conjunctive rules, Ω or A∪B when A∩B = ∅ for Yager and Dubois–Prade). Each rule is
therefore a fixed 0/1 scatter matrix of shape (4**n, 2**n) applied to the outer products.

References
----------
- G. Shafer, *A Mathematical Theory of Evidence*, Princeton University Press (1976): mass,
  belief, plausibility, Dempster's rule, discounting.
- P. Smets and R. Kennes, "The transferable belief model", Artif. Intell. 66, 191–234 (1994):
  the pignistic probability BetP and the unnormalised conjunctive rule.
- R. R. Yager, "On the Dempster–Shafer framework and new combination rules", Inf. Sci. 41,
  93–137 (1987): conflict assigned to Ω.
- D. Dubois and H. Prade, "Representation and combination of uncertainty with belief functions
  and possibility measures", Comput. Intell. 4, 244–264 (1988): conflict of A∩B = ∅ goes to A∪B.
- T. Denœux, "Conjunctive and disjunctive combination of belief functions induced by nondistinct
  bodies of evidence", Artif. Intell. 172, 234–264 (2008): the cautious rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

MAX_HYPOTHESES = 8
"""Largest frame supported: the scatter tables grow as 4**n."""

SUM_TOL = 1e-9
"""How far a row of masses may sum from 1 (float round-off of upstream arithmetic)."""

TOTAL_CONFLICT_TOL = 1e-12
"""Dempster's rule is undefined when the conflict K is within this of 1."""

_CHUNK_ROWS = 8192
"""Rows combined per block: keeps the (rows, 4**n) outer products near 16 MB for n = 4."""


class MassFunctionError(ValueError):
    """An array that is not a valid (batch of) mass function(s)."""


class TotalConflictError(ValueError):
    """Dempster's rule met rows whose sources fully contradict each other (K = 1)."""

    def __init__(self, rows: np.ndarray, rule: str = "dempster") -> None:
        self.rows = rows
        shown = ", ".join(str(tuple(int(i) for i in r)) if len(r) != 1 else str(int(r[0]))
                          for r in rows[:10])
        more = f" (and {len(rows) - 10} more)" if len(rows) > 10 else ""
        super().__init__(
            f"{rule}: total conflict K = 1 in {len(rows)} row(s): {shown}{more}; the sources "
            "fully contradict each other there and the normalised rule is "
            "undefined (use rule='yager' or 'dubois_prade', or discount the sources)"
        )


class Frame:
    """Names the hypotheses of a frame of discernment and turns names into bitmasks."""

    def __init__(self, hypotheses: Sequence[str]) -> None:
        names = tuple(hypotheses)
        if not names:
            raise ValueError("Frame: hypotheses is empty; a frame needs at least one hypothesis")
        if len(set(names)) != len(names):
            raise ValueError(f"Frame: hypotheses {names!r} contain duplicates")
        if len(names) > MAX_HYPOTHESES:
            raise ValueError(
                f"Frame: {len(names)} hypotheses given; at most {MAX_HYPOTHESES} are supported"
            )
        self.hypotheses = names
        self._bit = {name: 1 << i for i, name in enumerate(names)}

    @property
    def n(self) -> int:
        """Number of hypotheses."""
        return len(self.hypotheses)

    @property
    def size(self) -> int:
        """Length of a dense mass vector, 2**n."""
        return 1 << self.n

    @property
    def omega(self) -> int:
        """Bitmask of the whole frame."""
        return self.size - 1

    def mask(self, *names: str) -> int:
        """Bitmask of the set of the named hypotheses (no names: the empty set)."""
        out = 0
        for name in names:
            if name not in self._bit:
                raise ValueError(
                    f"Frame.mask: {name!r} is not a hypothesis of this frame {self.hypotheses!r}"
                )
            out |= self._bit[name]
        return out

    def names(self, mask: int) -> tuple[str, ...]:
        """Hypotheses in a focal set, in frame order."""
        if not 0 <= mask < self.size:
            raise ValueError(f"Frame.names: mask {mask} is outside 0..{self.size - 1}")
        return tuple(h for h, b in self._bit.items() if mask & b)

    def __repr__(self) -> str:
        return f"Frame({list(self.hypotheses)!r})"


def _n_hypotheses(size: int, where: str) -> int:
    n = size.bit_length() - 1
    if size < 2 or (1 << n) != size:
        raise MassFunctionError(f"{where}: last axis has length {size}, expected 2**n (n >= 1)")
    if n > MAX_HYPOTHESES:
        raise MassFunctionError(
            f"{where}: frame of {n} hypotheses; at most {MAX_HYPOTHESES} are supported"
        )
    return n


def validate_masses(
    m: np.ndarray, *, name: str = "masses", allow_empty: bool = False
) -> np.ndarray:
    """Check that ``m`` is a batch of mass functions and return it as a float array.

    Raises ``MassFunctionError`` (a ValueError) naming ``name``, the first offending row and the
    reason: wrong last-axis length, non-finite or negative entries, rows not summing to 1, or mass
    on the empty set (allowed only with ``allow_empty`` for unnormalised results).
    """
    arr = np.asarray(m, dtype=float)
    if arr.ndim == 0:
        raise MassFunctionError(f"{name}: a scalar is not a mass function (need shape (..., 2**n))")
    _n_hypotheses(arr.shape[-1], name)

    def first_bad(bad: np.ndarray) -> str:
        idx = np.argwhere(bad)[0]
        return str(tuple(int(i) for i in idx)) if idx.size != 1 else str(int(idx[0]))

    bad = ~np.isfinite(arr)
    if bad.any():
        raise MassFunctionError(f"{name}: non-finite mass at index {first_bad(bad)}")
    bad = arr < 0
    if bad.any():
        raise MassFunctionError(
            f"{name}: negative mass {arr[bad][0]:.3g} at index {first_bad(bad)}"
        )
    if not allow_empty:
        bad = arr[..., 0] > 0
        if bad.any():
            row = first_bad(bad) if bad.ndim else "()"
            raise MassFunctionError(
                f"{name}: mass on the empty set in row {row}; normalise first or combine with "
                "a rule that keeps no conflict"
            )
    sums = arr.sum(axis=-1)
    bad = np.abs(sums - 1.0) > SUM_TOL
    if bad.any():
        row = first_bad(bad) if bad.ndim else "()"
        raise MassFunctionError(
            f"{name}: masses in row {row} sum to {np.asarray(sums)[bad].flat[0]:.12g}, not 1"
        )
    return arr


def vacuous(n_hyp: int, shape: int | tuple[int, ...] = ()) -> np.ndarray:
    """Total ignorance: all mass on Ω, for every row of ``shape``."""
    if isinstance(shape, int):
        shape = (shape,)
    if not 1 <= n_hyp <= MAX_HYPOTHESES:
        raise ValueError(f"vacuous: n_hyp={n_hyp} must be in 1..{MAX_HYPOTHESES}")
    out = np.zeros((*shape, 1 << n_hyp))
    out[..., -1] = 1.0
    return out


# --------------------------------------------------------------------------------------------
# Fixed tables per frame size
# --------------------------------------------------------------------------------------------


@cache
def _scatter(n: int, rule: str) -> np.ndarray:
    """0/1 matrix (4**n, 2**n): row a*2**n + b is the target set of m1(a)·m2(b) under ``rule``."""
    size = 1 << n
    a, b = np.divmod(np.arange(size * size), size)
    inter = a & b
    if rule == "conjunctive":
        target = inter
    elif rule == "yager":
        target = np.where(inter == 0, size - 1, inter)
    elif rule == "dubois_prade":
        target = np.where(inter == 0, a | b, inter)
    elif rule == "disjunctive":
        target = a | b
    else:  # pragma: no cover - internal
        raise KeyError(rule)
    table = np.zeros((size * size, size))
    table[np.arange(size * size), target] = 1.0
    table.setflags(write=False)
    return table


@cache
def _subset_matrix(n: int) -> np.ndarray:
    """S[b, a] = 1 when b ⊆ a (so ``m @ S`` is the implicability b(A) = Σ_{B⊆A} m(B))."""
    idx = np.arange(1 << n)
    mat = ((idx[:, None] & idx[None, :]) == idx[:, None]).astype(float)
    mat.setflags(write=False)
    return mat


@cache
def _mobius(n: int) -> np.ndarray:
    """Inverse of the commonality transform: ``q @ _mobius(n)`` gives back the masses."""
    idx = np.arange(1 << n)
    card = np.array([int(i).bit_count() for i in idx])
    superset = (idx[:, None] & idx[None, :]) == idx[None, :]  # [B, A]: A ⊆ B
    mat = np.where(superset, (-1.0) ** (card[:, None] - card[None, :]), 0.0)
    mat.setflags(write=False)
    return mat


@cache
def _cardinality(n: int) -> np.ndarray:
    idx = np.arange(1 << n)
    card = np.array([int(i).bit_count() for i in idx], dtype=float)
    card.setflags(write=False)
    return card


def _pairwise(m1: np.ndarray, m2: np.ndarray, rule: str) -> np.ndarray:
    """Scatter all products m1(A)·m2(B) to their targets; rows broadcast like numpy."""
    m1, m2 = np.broadcast_arrays(m1, m2)
    size = m1.shape[-1]
    lead = m1.shape[:-1]
    a = m1.reshape(-1, size)
    b = m2.reshape(-1, size)
    table = _scatter(size.bit_length() - 1, rule)
    out = np.empty_like(a)
    for start in range(0, a.shape[0], _CHUNK_ROWS):
        stop = start + _CHUNK_ROWS
        outer = (a[start:stop, :, None] * b[start:stop, None, :]).reshape(-1, size * size)
        out[start:stop] = outer @ table
    return out.reshape(*lead, size)


def _check_pair(m1: np.ndarray, m2: np.ndarray, where: str, allow_empty: bool = False):
    a = validate_masses(m1, name=f"{where}: m1", allow_empty=allow_empty)
    b = validate_masses(m2, name=f"{where}: m2", allow_empty=allow_empty)
    if a.shape[-1] != b.shape[-1]:
        raise MassFunctionError(
            f"{where}: m1 has {a.shape[-1]} focal sets and m2 has {b.shape[-1]}; the frames differ"
        )
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise MassFunctionError(
            f"{where}: shapes {a.shape} and {b.shape} do not broadcast"
        ) from None
    return a, b


def _normalise(conj: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Dempster's normalisation of an unnormalised conjunctive result: m(A) / (1 − K)."""
    k = conj[..., 0].copy()
    total = k >= 1.0 - TOTAL_CONFLICT_TOL
    if np.any(total):
        raise TotalConflictError(np.argwhere(np.atleast_1d(total)), rule=where)
    out = conj / (1.0 - k)[..., None]
    out[..., 0] = 0.0
    return out, np.clip(k, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Combination rules
# --------------------------------------------------------------------------------------------


def combine_conjunctive(m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Unnormalised conjunctive rule (TBM, Smets & Kennes 1994): the conflict stays on ∅.

    Accepts unnormalised inputs (mass on ∅), so it can be folded over many sources.
    """
    a, b = _check_pair(m1, m2, "combine_conjunctive", allow_empty=True)
    return _pairwise(a, b, "conjunctive")


def combine_dempster(m1: np.ndarray, m2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dempster's rule (Shafer 1976): conjunctive combination renormalised by 1 − K.

    Returns the combined masses and the conflict K per row. Raises ``TotalConflictError`` naming
    the rows where K = 1 (within 1e-12), where the rule is undefined.
    """
    a, b = _check_pair(m1, m2, "combine_dempster")
    return _normalise(_pairwise(a, b, "conjunctive"), "combine_dempster")


def combine_yager(m1: np.ndarray, m2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Yager's rule (Yager 1987): the conflict K becomes ignorance (mass on Ω), never renormalised.

    Returns the combined masses and K per row. Not associative.
    """
    a, b = _check_pair(m1, m2, "combine_yager")
    k = _pairwise(a, b, "conjunctive")[..., 0]
    return _pairwise(a, b, "yager"), k


def combine_dubois_prade(m1: np.ndarray, m2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dubois–Prade rule (1988): the product m1(A)·m2(B) with A∩B = ∅ goes to A∪B.

    Conflict becomes imprecision between the disagreeing sets instead of being dropped (Dempster)
    or sent to Ω (Yager). Returns the combined masses and K per row. Commutative, not associative.
    """
    a, b = _check_pair(m1, m2, "combine_dubois_prade")
    k = _pairwise(a, b, "conjunctive")[..., 0]
    return _pairwise(a, b, "dubois_prade"), k


def _log_weights(m: np.ndarray, where: str) -> np.ndarray:
    """Log conjunctive weights ln w(A), A ≠ Ω, of non-dogmatic masses (Denœux 2008, eq. 14)."""
    omega_mass = m[..., -1]
    dogmatic = omega_mass <= 0
    if np.any(dogmatic):
        rows = np.argwhere(np.atleast_1d(dogmatic))[:10].tolist()
        raise MassFunctionError(
            f"{where}: the cautious rule needs non-dogmatic masses (m(Ω) > 0); rows {rows} have "
            "m(Ω) = 0 (discount them first)"
        )
    n = m.shape[-1].bit_length() - 1
    q = m @ _subset_matrix(n).T  # commonality q(A) = Σ_{B⊇A} m(B); q ≥ m(Ω) > 0
    # ln w(A) = −Σ_{B⊇A} (−1)^{|B|−|A|} ln q(B): the Möbius inverse of ln q
    return -(np.log(q) @ _mobius(n))


def combine_cautious(m1: np.ndarray, m2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cautious rule (Denœux 2008): conjunctive weights combine by their minimum.

    Meant for sources that may share evidence (idempotent: m ∧ m = m), unlike Dempster's rule
    which double-counts shared evidence. Needs non-dogmatic masses (m(Ω) > 0). Returns the
    combined masses (renormalised) and the conflict K per row. The weights go through logarithms
    and an alternating-sign Möbius sum, so accuracy degrades as m(Ω) → 0: keep m(Ω) ≳ 1e-3, e.g.
    by discounting the sources first.
    """
    a, b = _check_pair(m1, m2, "combine_cautious")
    return _cautious(a, b)


def _cautious(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.broadcast_arrays(a, b)
    n = a.shape[-1].bit_length() - 1
    log_w = np.minimum(_log_weights(a, "combine_cautious: m1"),
                       _log_weights(b, "combine_cautious: m2"))
    idx = np.arange(1 << n)
    omega = (1 << n) - 1
    # q12(B) = Π_{A≠Ω, B⊄A} w12(A): the commonality of the conjunction of simple masses A^w(A)
    not_subset = ((idx[None, :] & idx[:, None]) != idx[None, :]) & (idx[:, None] != omega)
    conj = np.exp(log_w @ not_subset.astype(float)) @ _mobius(n)
    conj = np.where(np.abs(conj) < 1e-13, 0.0, conj)
    return _normalise(np.clip(conj, 0.0, None), "combine_cautious")


_RULES = {
    "dempster": combine_dempster,
    "yager": combine_yager,
    "dubois_prade": combine_dubois_prade,
    "cautious": combine_cautious,
}
RULES: tuple[str, ...] = tuple(_RULES)


def combine(masses: Sequence[np.ndarray], rule: str = "dempster") -> tuple[np.ndarray, np.ndarray]:
    """Combine several sources row by row; returns (combined masses, total conflict K per row).

    K is always the mass the unnormalised conjunctive combination of *all* sources puts on ∅, so
    conflicts are comparable across rules. ``dempster``: all sources combined conjunctively, then
    renormalised once (equal to folding pairwise, since the rule is associative). ``yager``: the
    n-source rule of Yager (1987), conjunctive combination with the final conflict sent to Ω.
    ``dubois_prade``: a left fold of the pairwise rule in the order given (the rule is not
    associative, so the order matters). ``cautious``: a fold (associative and commutative).
    """
    if rule not in _RULES:
        raise ValueError(f"combine: unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    if len(masses) == 0:
        raise ValueError("combine: masses is empty; need at least one source")
    arrays = [validate_masses(m, name=f"combine: source {i}") for i, m in enumerate(masses)]
    sizes = {a.shape[-1] for a in arrays}
    if len(sizes) != 1:
        raise MassFunctionError(f"combine: sources have different frame sizes {sorted(sizes)}")
    conj = arrays[0]
    for other in arrays[1:]:
        conj = _pairwise(conj, other, "conjunctive")
    k = np.clip(conj[..., 0], 0.0, 1.0)
    if len(arrays) == 1:
        return arrays[0].copy(), k
    if rule == "dempster":
        return _normalise(conj, "combine(dempster)")
    if rule == "yager":
        out = conj.copy()
        out[..., -1] += out[..., 0]
        out[..., 0] = 0.0
        return out, k
    result = arrays[0]
    for other in arrays[1:]:
        if rule == "dubois_prade":
            result = _pairwise(result, other, "dubois_prade")
        else:
            result, _ = _cautious(result, other)
    return result, k


# --------------------------------------------------------------------------------------------
# Discounting and summaries
# --------------------------------------------------------------------------------------------


def discount(m: np.ndarray, rate: float | np.ndarray) -> np.ndarray:
    """Shafer's discounting by a rate α: m' = (1 − α)·m, then m'(Ω) += α.

    ``rate`` is the *discount rate* (1 − reliability): α = 0 keeps the source as is, α = 1 turns it
    into the vacuous mass function. A scalar, or an array broadcasting against the rows of ``m``
    (one rate per row, per source, ...).
    """
    arr = validate_masses(m, name="discount: m")
    alpha = np.asarray(rate, dtype=float)
    if not np.all(np.isfinite(alpha)) or np.any((alpha < 0) | (alpha > 1)):
        bad = alpha[~(np.isfinite(alpha) & (alpha >= 0) & (alpha <= 1))].flat[0]
        raise ValueError(f"discount: rate {bad!r} must be a finite number in [0, 1]")
    try:
        np.broadcast_shapes(alpha.shape, arr.shape[:-1])
    except ValueError:
        raise ValueError(
            f"discount: rate of shape {alpha.shape} does not broadcast against rows "
            f"{arr.shape[:-1]}"
        ) from None
    out = (1.0 - alpha)[..., None] * arr
    out[..., -1] += alpha
    return out


def discount_by_reliability(m: np.ndarray, reliability: float | np.ndarray) -> np.ndarray:
    """Discount a source trusted with ``reliability`` β ∈ [0, 1]: ``discount(m, 1 − β)``."""
    beta = np.asarray(reliability, dtype=float)
    if not np.all(np.isfinite(beta)) or np.any((beta < 0) | (beta > 1)):
        raise ValueError(f"discount_by_reliability: reliability {reliability!r} must be in [0, 1]")
    return discount(m, 1.0 - beta)


def _mask_vector(size: int, mask: int, where: str) -> int:
    if not isinstance(mask, int | np.integer) or not 0 <= int(mask) < size:
        raise ValueError(f"{where}: mask {mask!r} must be an integer in 0..{size - 1}")
    return int(mask)


def belief(m: np.ndarray, mask: int) -> np.ndarray:
    """Bel(A) = Σ_{∅≠B⊆A} m(B): the mass that certainly supports A."""
    arr = validate_masses(m, name="belief: m")
    a = _mask_vector(arr.shape[-1], mask, "belief")
    idx = np.arange(arr.shape[-1])
    inside = ((idx & ~a) == 0) & (idx != 0)
    return arr[..., inside].sum(axis=-1)


def plausibility(m: np.ndarray, mask: int) -> np.ndarray:
    """Pl(A) = Σ_{B∩A≠∅} m(B) = 1 − Bel(not A): the mass that does not contradict A."""
    arr = validate_masses(m, name="plausibility: m")
    a = _mask_vector(arr.shape[-1], mask, "plausibility")
    idx = np.arange(arr.shape[-1])
    return arr[..., (idx & a) != 0].sum(axis=-1)


def pignistic(m: np.ndarray, base_rate: np.ndarray | None = None) -> np.ndarray:
    """Pignistic probability BetP(ω) = Σ_{B∋ω} m(B)/|B| (Smets & Kennes 1994), shape (..., n).

    ``base_rate`` (n positive numbers, normalised here): the mass of each set B is shared in
    proportion to the base rates of its members, BetP(ω) = Σ_{B∋ω} m(B) a(ω)/a(B) (the projected
    probability of subjective logic, Jøsang 2016). Equal base rates give Smets' transform; rates
    from how often each hypothesis occurs keep ignorance from leaning towards whichever outcome
    the frame happens to split most finely.
    """
    arr = validate_masses(m, name="pignistic: m")
    n = arr.shape[-1].bit_length() - 1
    idx = np.arange(arr.shape[-1])
    inside = ((idx[:, None] >> np.arange(n)[None, :]) & 1).astype(float)
    if base_rate is None:
        weight = np.ones(n)
    else:
        weight = np.asarray(base_rate, dtype=float).ravel()
        if weight.shape != (n,) or not np.all(np.isfinite(weight)) or np.any(weight <= 0):
            raise ValueError(f"pignistic: base_rate needs {n} finite positive values, got {base_rate!r}")
        weight = weight / weight.sum()
    member = inside * weight[None, :]
    total = member.sum(axis=1, keepdims=True)
    total[0] = 1.0  # m(∅) = 0 after validation
    return arr @ (member / total)
