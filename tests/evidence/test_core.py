"""Dempster–Shafer core: hand-computed cases, algebraic properties, and agreement with pybelief and
evtools-dst (independent implementations) on random mass functions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matflow.evidence import (
    Frame,
    MassFunctionError,
    TotalConflictError,
    belief,
    combine,
    combine_cautious,
    combine_conjunctive,
    combine_dempster,
    combine_dubois_prade,
    combine_yager,
    discount,
    discount_by_reliability,
    pignistic,
    plausibility,
    vacuous,
    validate_masses,
)

ATOL = 1e-12


def _normalised(raw: list[float], n: int) -> np.ndarray:
    m = np.zeros(1 << n)
    m[1:] = raw
    if m.sum() == 0:
        m[-1] = 1.0
    return m / m.sum()


@st.composite
def mass_functions(draw, n: int | None = None, count: int = 1, min_omega: float = 0.0):
    """``count`` random mass functions on one frame of n hypotheses, some focal sets zeroed."""
    n = draw(st.integers(2, 4)) if n is None else n
    out = []
    for _ in range(count):
        raw = draw(
            st.lists(
                st.one_of(st.just(0.0), st.floats(0.0, 1.0, allow_subnormal=False)),
                min_size=(1 << n) - 1,
                max_size=(1 << n) - 1,
            )
        )
        m = _normalised(raw, n)
        if min_omega:
            m = discount(m, min_omega)
        out.append(m)
    return out


def _bruteforce(m1: np.ndarray, m2: np.ndarray, on_conflict: str) -> np.ndarray:
    """Reference loops over focal-set pairs, written independently of the scatter tables."""
    size = len(m1)
    out = np.zeros(size)
    for a in range(size):
        for b in range(size):
            target = a & b
            if target == 0 and on_conflict == "omega":
                target = size - 1
            elif target == 0 and on_conflict == "union":
                target = a | b
            out[target] += m1[a] * m2[b]
    return out


# ------------------------------------------------------------------ hand-computed examples


FRAME = Frame(["x", "y", "z"])
X, Y, XY, OMEGA = FRAME.mask("x"), FRAME.mask("y"), FRAME.mask("x", "y"), FRAME.omega


def _two_witnesses() -> tuple[np.ndarray, np.ndarray]:
    m1 = np.zeros(8)
    m1[[X, OMEGA]] = [0.6, 0.4]
    m2 = np.zeros(8)
    m2[[Y, OMEGA]] = [0.5, 0.5]
    return m1, m2


def test_frame_masks_and_names():
    assert (X, Y, XY, OMEGA) == (1, 2, 3, 7)
    assert FRAME.size == 8 and FRAME.n == 3
    assert FRAME.names(5) == ("x", "z")
    with pytest.raises(ValueError, match="'w' is not a hypothesis"):
        FRAME.mask("w")
    with pytest.raises(ValueError, match="duplicates"):
        Frame(["a", "a"])


def test_hand_computed_dempster_yager_dubois_prade():
    m1, m2 = _two_witnesses()
    # conjunctive: {x}∩{y}=∅ 0.30, {x} 0.30, {y} 0.20, Ω 0.20
    conj = combine_conjunctive(m1, m2)
    np.testing.assert_allclose(conj[[0, X, Y, OMEGA]], [0.3, 0.3, 0.2, 0.2], atol=ATOL)
    dem, k = combine_dempster(m1, m2)
    assert k == pytest.approx(0.3)
    np.testing.assert_allclose(dem[[X, Y, OMEGA]], [3 / 7, 2 / 7, 2 / 7], atol=ATOL)
    yag, k_y = combine_yager(m1, m2)
    np.testing.assert_allclose(yag[[X, Y, XY, OMEGA]], [0.3, 0.2, 0.0, 0.5], atol=ATOL)
    dp, k_dp = combine_dubois_prade(m1, m2)
    np.testing.assert_allclose(dp[[X, Y, XY, OMEGA]], [0.3, 0.2, 0.3, 0.2], atol=ATOL)
    assert k_y == pytest.approx(0.3) and k_dp == pytest.approx(0.3)
    # BetP of the Dempster result: 3/7 + (2/7)/3 for x
    np.testing.assert_allclose(
        pignistic(dem), [3 / 7 + 2 / 21, 2 / 7 + 2 / 21, 2 / 21], atol=ATOL
    )
    assert belief(dem, XY) == pytest.approx(5 / 7)
    assert plausibility(dem, X) == pytest.approx(5 / 7)


def test_zadeh_example_dempster_puts_everything_on_the_minor_hypothesis():
    """Zadeh's counter-example: two experts nearly certain of different causes."""
    m1 = np.zeros(8)
    m1[[X, Y]] = [0.99, 0.01]
    m2 = np.zeros(8)
    m2[[FRAME.mask("z"), Y]] = [0.99, 0.01]
    dem, k = combine_dempster(m1, m2)
    assert k == pytest.approx(0.9999)
    assert dem[Y] == pytest.approx(1.0)
    yag, _ = combine_yager(m1, m2)
    assert yag[OMEGA] == pytest.approx(0.9999)


def test_total_conflict_raises_and_names_rows():
    m1 = np.zeros((3, 8))
    m1[:, X] = 1.0
    m2 = np.zeros((3, 8))
    m2[:, OMEGA] = 1.0
    m2[1] = 0.0
    m2[1, Y] = 1.0  # row 1 fully contradicts
    with pytest.raises(TotalConflictError, match=r"1 row\(s\): 1") as info:
        combine_dempster(m1, m2)
    assert isinstance(info.value, ValueError)
    assert info.value.rows.ravel().tolist() == [1]
    with pytest.raises(TotalConflictError):
        combine([m1, m2, vacuous(3, 3)])
    yag, k = combine_yager(m1, m2)  # Yager stays defined
    assert k.tolist() == [0.0, 1.0, 0.0] and yag[1, OMEGA] == 1.0


def test_nearly_total_conflict_is_not_total():
    m1 = np.zeros(8)
    m1[[X, OMEGA]] = [1 - 1e-9, 1e-9]
    m2 = np.zeros(8)
    m2[Y] = 1.0
    dem, k = combine_dempster(m1, m2)
    assert k == pytest.approx(1 - 1e-9)
    assert dem[Y] == pytest.approx(1.0)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.ones(7) / 7, "length 7, expected 2\\*\\*n"),
        (np.array([0, 0.5, np.nan, 0.5]), "non-finite mass at index 2"),
        (np.array([0, 1.2, -0.2, 0.0]), "negative mass"),
        (np.array([0.1, 0.4, 0.5, 0.0]), "mass on the empty set"),
        (np.array([[0, 0.5, 0.5, 0.0], [0, 0.5, 0.4, 0.0]]), "row 1 sum to 0.9"),
        (np.float64(1.0), "scalar"),
    ],
)
def test_validate_masses_rejects_bad_input(bad, message):
    with pytest.raises(MassFunctionError, match=message) as info:
        validate_masses(bad, name="source 'rules'")
    assert "source 'rules'" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_combination_rejects_mismatched_frames_and_bad_rule():
    with pytest.raises(MassFunctionError, match="frames differ"):
        combine_dempster(vacuous(2), vacuous(3))
    with pytest.raises(ValueError, match="unknown rule 'pcr5'"):
        combine([vacuous(2), vacuous(2)], rule="pcr5")
    with pytest.raises(ValueError, match="empty"):
        combine([])


@pytest.mark.parametrize("rate", [-0.1, 1.5, np.nan])
def test_discount_rejects_rates_outside_unit_interval(rate):
    with pytest.raises(ValueError, match="rate .* must be a finite number in \\[0, 1\\]"):
        discount(vacuous(2), rate)


def test_cautious_rejects_dogmatic_masses():
    m = np.zeros(4)
    m[1] = 1.0
    with pytest.raises(MassFunctionError, match="non-dogmatic"):
        combine_cautious(m, vacuous(2))


# ------------------------------------------------------------------ properties


@settings(max_examples=60, deadline=None)
@given(mass_functions(count=2))
def test_rules_are_commutative(pair):
    m1, m2 = pair
    for rule in (combine_yager, combine_dubois_prade):
        np.testing.assert_allclose(rule(m1, m2)[0], rule(m2, m1)[0], atol=ATOL)
    try:
        d12, k12 = combine_dempster(m1, m2)
    except TotalConflictError:
        with pytest.raises(TotalConflictError):
            combine_dempster(m2, m1)
        return
    d21, k21 = combine_dempster(m2, m1)
    np.testing.assert_allclose(d12, d21, atol=1e-9)
    assert k12 == pytest.approx(k21, abs=ATOL)


@settings(max_examples=60, deadline=None)
@given(mass_functions(count=3, min_omega=0.05))
def test_dempster_and_cautious_are_associative(triple):
    """Discounted inputs keep K < 1, so every bracketing is defined."""
    m1, m2, m3 = triple
    for rule in (combine_dempster, combine_cautious):
        left = rule(rule(m1, m2)[0], m3)[0]
        right = rule(m1, rule(m2, m3)[0])[0]
        np.testing.assert_allclose(left, right, atol=1e-9)
    folded, k = combine([m1, m2, m3])
    np.testing.assert_allclose(folded, combine_dempster(combine_dempster(m1, m2)[0], m3)[0],
                               atol=1e-9)
    conj = combine_conjunctive(combine_conjunctive(m1, m2), m3)
    assert k == pytest.approx(conj[0], abs=ATOL)


def test_dubois_prade_is_not_associative():
    """A fixed counter-example: the reason ``combine`` documents the fold order."""
    f = Frame(["a", "b", "c"])
    a, b = f.mask("a"), f.mask("b")
    m1, m2, m3 = np.zeros(8), np.zeros(8), np.zeros(8)
    m1[a] = 1.0
    m2[a] = 1.0
    m3[b] = 1.0
    left = combine_dubois_prade(combine_dubois_prade(m1, m2)[0], m3)[0]
    right = combine_dubois_prade(m1, combine_dubois_prade(m2, m3)[0])[0]
    # left: {a}∩{a} = {a}, then {a}∩{b} = ∅ -> {a,b}; right: {a}∩{b} = ∅ -> {a,b}, then {a}
    assert left[f.mask("a", "b")] == pytest.approx(1.0)
    assert right[a] == pytest.approx(1.0)
    folded, _ = combine([m1, m2, m3], rule="dubois_prade")
    np.testing.assert_allclose(folded, left, atol=ATOL)


@settings(max_examples=60, deadline=None)
@given(mass_functions(count=1))
def test_vacuous_mass_is_neutral(single):
    (m,) = single
    omega = vacuous(m.shape[-1].bit_length() - 1)
    for rule in (combine_dempster, combine_yager, combine_dubois_prade):
        out, k = rule(m, omega)
        np.testing.assert_allclose(out, m, atol=ATOL)
        assert k == pytest.approx(0.0, abs=ATOL)


@settings(max_examples=60, deadline=None)
@given(mass_functions(count=1), st.floats(0.0, 1.0))
def test_discounting(single, rate):
    (m,) = single
    n = m.shape[-1].bit_length() - 1
    np.testing.assert_allclose(discount(m, 1.0), vacuous(n), atol=ATOL)
    np.testing.assert_allclose(discount(m, 0.0), m, atol=ATOL)
    d = discount(m, rate)
    validate_masses(d)
    np.testing.assert_allclose(d, discount_by_reliability(m, 1.0 - rate), atol=ATOL)
    # discounting only ever moves mass to Ω: beliefs shrink, plausibilities grow
    for mask in range(1, 1 << n):
        assert belief(d, mask) <= belief(m, mask) + ATOL
        assert plausibility(d, mask) >= plausibility(m, mask) - ATOL


def test_discount_per_row_rates():
    m = np.tile(np.array([0.0, 0.7, 0.3, 0.0]), (3, 1))
    d = discount(m, np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(d[:, 3], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(d[1, 1:3], [0.35, 0.15])
    with pytest.raises(ValueError, match="does not broadcast"):
        discount(m, np.array([0.1, 0.2]))


@settings(max_examples=60, deadline=None)
@given(mass_functions(count=1))
def test_belief_betp_plausibility_order_and_duality(single):
    (m,) = single
    n = m.shape[-1].bit_length() - 1
    omega = (1 << n) - 1
    betp = pignistic(m)
    assert betp.sum() == pytest.approx(1.0)
    for mask in range(1, 1 << n):
        bel, pl = belief(m, mask), plausibility(m, mask)
        p = sum(betp[i] for i in range(n) if mask >> i & 1)
        assert bel - ATOL <= p <= pl + ATOL
        assert bel == pytest.approx(1.0 - plausibility(m, omega & ~mask), abs=ATOL)


@settings(max_examples=40, deadline=None)
@given(mass_functions(count=2))
def test_rules_match_bruteforce_reference(pair):
    m1, m2 = pair
    np.testing.assert_allclose(combine_yager(m1, m2)[0], _bruteforce(m1, m2, "omega"), atol=ATOL)
    np.testing.assert_allclose(
        combine_dubois_prade(m1, m2)[0], _bruteforce(m1, m2, "union"), atol=ATOL
    )
    np.testing.assert_allclose(combine_conjunctive(m1, m2), _bruteforce(m1, m2, "none"),
                               atol=ATOL)


@settings(max_examples=30, deadline=None)
@given(mass_functions(count=1, min_omega=0.01))
def test_cautious_rule_is_idempotent(single):
    (m,) = single
    out, _ = combine_cautious(m, m)
    np.testing.assert_allclose(out, m, atol=1e-9)


def test_batch_equals_row_by_row_and_broadcasts():
    rng = np.random.default_rng(3)
    m1 = np.c_[np.zeros(20), rng.dirichlet(np.full(15, 0.5), size=20)]
    m2 = np.c_[np.zeros(20), rng.dirichlet(np.full(15, 0.5), size=20)]
    m1 = discount(m1, 0.02)
    batch, k = combine_dempster(m1, m2)
    for i in range(20):
        row, k_i = combine_dempster(m1[i], m2[i])
        np.testing.assert_allclose(batch[i], row, atol=ATOL)
        assert k[i] == pytest.approx(k_i)
    # one shared mass function against many rows
    shared, _ = combine_dempster(m1, m2[0])
    np.testing.assert_allclose(shared[5], combine_dempster(m1[5], m2[0])[0], atol=ATOL)
    # three leading axes (sources x candidates)
    stacked = np.stack([m1, m2])
    np.testing.assert_allclose(belief(stacked, 7), [belief(m1, 7), belief(m2, 7)])


# ------------------------------------------------------------------ differential tests


def _random_masses(rng: np.random.Generator, n: int) -> np.ndarray:
    m = rng.dirichlet(np.full((1 << n) - 1, 0.4))
    m[rng.random(m.size) < 0.3] = 0.0
    if m.sum() == 0:
        m[-1] = 1.0
    return np.r_[0.0, m / m.sum()]


def test_against_pybelief():
    pybelief = pytest.importorskip("pybelief")
    rng = np.random.default_rng(20250214)
    for trial in range(40):
        n = 2 + trial % 3
        frame = [f"h{i}" for i in range(n)]
        m1, m2 = _random_masses(rng, n), _random_masses(rng, n)
        p1 = pybelief.MassFunction(frame, {i: float(v) for i, v in enumerate(m1) if v})
        p2 = pybelief.MassFunction(frame, {i: float(v) for i, v in enumerate(m2) if v})
        k_ref = p1.conflict(p2)
        if k_ref > 1 - 1e-9:
            with pytest.raises(TotalConflictError):
                combine_dempster(m1, m2)
            continue
        ours, k = combine_dempster(m1, m2)
        ref = p1.combine_dempster(p2)
        assert k == pytest.approx(k_ref, abs=1e-12)
        np.testing.assert_allclose(ours, [ref[i] for i in range(1 << n)], atol=1e-10)
        yager_ref = p1.combine_yager(p2)
        np.testing.assert_allclose(
            combine_yager(m1, m2)[0], [yager_ref[i] for i in range(1 << n)], atol=1e-12
        )
        for mask in range(1, 1 << n):
            assert belief(m1, mask) == pytest.approx(p1.belief(mask), abs=1e-12)
            assert plausibility(m1, mask) == pytest.approx(p1.plausibility(mask), abs=1e-12)
        bet = p1.pignistic()
        np.testing.assert_allclose(pignistic(m1), [bet[h] for h in frame], atol=1e-12)
        alpha = float(rng.random())
        disc = p1.discount(alpha)
        np.testing.assert_allclose(
            discount(m1, alpha), [disc[i] for i in range(1 << n)], atol=1e-12
        )


def test_against_evtools():
    pytest.importorskip("evtools")
    from evtools import combinations, conversions
    from evtools.dsvector import DSVector

    rng = np.random.default_rng(14631)
    checked = 0
    for trial in range(40):
        n = 2 + trial % 3
        frame = [f"h{i}" for i in range(n)]
        m1, m2 = _random_masses(rng, n), _random_masses(rng, n)
        v1, v2 = DSVector.from_dense(frame, m1), DSVector.from_dense(frame, m2)
        crc = combinations.crc(v1, v2).dense
        np.testing.assert_allclose(combine_conjunctive(m1, m2), crc, atol=1e-12)
        if crc[0] < 1 - 1e-9:
            ours, k = combine_dempster(m1, m2)
            assert k == pytest.approx(crc[0], abs=1e-12)
            np.testing.assert_allclose(ours, combinations.dempster(v1, v2).dense, atol=1e-10)
            checked += 1
        bel, pl = conversions.mtobel(m1), conversions.mtopl(m1)
        for mask in range(1, 1 << n):
            assert belief(m1, mask) == pytest.approx(bel[mask], abs=1e-12)
            assert plausibility(m1, mask) == pytest.approx(pl[mask], abs=1e-12)
        np.testing.assert_allclose(pignistic(m1), conversions.betp(m1), atol=1e-12)
        # cautious rule on discounted (non-dogmatic) versions
        d1, d2 = discount(m1, 0.1), discount(m2, 0.2)
        ref = combinations.cautious(DSVector.from_dense(frame, d1), DSVector.from_dense(frame, d2))
        ref_dense = ref.dense
        k_ref = ref_dense[0]
        ours_c, k_c = combine_cautious(d1, d2)
        assert k_c == pytest.approx(k_ref, abs=1e-9)
        expected = ref_dense.copy()
        expected[0] = 0.0
        np.testing.assert_allclose(ours_c, expected / (1 - k_ref), atol=1e-9)
    assert checked > 20


@settings(max_examples=30, deadline=None)
@given(mass_functions(count=2, min_omega=0.05))
def test_combine_of_two_sources_equals_the_pairwise_rule(pair):
    m1, m2 = pair
    for rule, pairwise in (
        ("dempster", combine_dempster),
        ("yager", combine_yager),
        ("dubois_prade", combine_dubois_prade),
        ("cautious", combine_cautious),
    ):
        out, k = combine([m1, m2], rule=rule)
        ref, k_ref = pairwise(m1, m2)
        np.testing.assert_allclose(out, ref, atol=1e-9)
        assert k == pytest.approx(combine_conjunctive(m1, m2)[0], abs=ATOL)
        if rule != "cautious":  # the cautious rule's own conflict differs from the conjunctive K
            assert k == pytest.approx(k_ref, abs=ATOL)
    single, k_single = combine([m1])
    np.testing.assert_allclose(single, m1)
    assert k_single == 0.0


@settings(max_examples=60, deadline=None)
@given(mass_functions(), st.lists(st.floats(0.05, 5.0), min_size=4, max_size=4))
def test_base_rate_pignistic_is_a_probability_that_keeps_singletons_and_shares_sets_by_rate(ms, rates):
    m = ms[0]
    n = len(m).bit_length() - 1
    a = np.asarray(rates[:n]) / np.sum(rates[:n])
    bet = pignistic(m, a)
    assert np.all(bet >= -ATOL) and bet.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(pignistic(m, np.ones(n)), pignistic(m), atol=ATOL)  # equal rates: Smets
    # brute force: every focal set's mass shared in proportion to its members' base rates
    expected = np.zeros(n)
    for mask in range(1, len(m)):
        members = [i for i in range(n) if mask >> i & 1]
        for i in members:
            expected[i] += m[mask] * a[i] / a[members].sum()
    np.testing.assert_allclose(bet, expected, atol=1e-12)


def test_base_rate_pignistic_of_total_ignorance_is_the_base_rate_and_bad_rates_are_refused():
    np.testing.assert_allclose(pignistic(vacuous(4), [0.2, 0.1, 0.1, 0.6]), [0.2, 0.1, 0.1, 0.6])
    np.testing.assert_allclose(pignistic(vacuous(4)), [0.25] * 4)
    for bad in ([0.5, 0.5], [1.0, 0.0, 1.0, 1.0], [1.0, np.nan, 1.0, 1.0]):
        with pytest.raises(ValueError, match="base_rate"):
            pignistic(vacuous(4), bad)
