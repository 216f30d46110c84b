"""The traffic model of `labelloop simulate` (service/simulate/scenarios.py), without I/O: with a
fixed seed and tens of thousands of predictions, its rates, funnel ratios and log-normal delays
are within stated tolerances of the scenario's parameters, duplicates and skew appear at their
rates, and a seed reproduces the same traffic.

Tolerances are several standard errors wide at these sample sizes (the seed is fixed, so the
figures are deterministic; the margins say how far from the parameter a correct model may land):
within SE (5) standard errors: of a binomial proportion for rates, of a sample quantile (in log
space) for the delay quantiles, of the sample standard deviation for sigma. At these sizes that is
about 1 point for the click-through rate, 3% for the click delay's median and 10% for its p99."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
from statistics import NormalDist, median, stdev

import pytest

from service.core.histogram import bucket_of, quantile
from service.simulate.run import nearest_rank, within_histogram
from service.simulate.scenarios import SCENARIOS, Delay, Eta, Event, Fraud, Prediction, Record, Recsys, traffic

RATE = 1000.0  # predictions per second
DURATION = 60.0  # so about 60,000 predictions per scenario
SEED = 20261129
SE = 5.0  # every figure within 5 standard errors of its parameter


Traffic = list[tuple[float, Record]]


def run(scenario_name: str, seed: int = SEED, rate: float = RATE, duration: float = DURATION) -> Traffic:
    return list(traffic(SCENARIOS[scenario_name], rate, duration, random.Random(seed), run="t"))


@pytest.fixture(scope="module")
def recsys() -> Traffic:
    return run("recsys")


@pytest.fixture(scope="module")
def eta() -> Traffic:
    return run("eta")


@pytest.fixture(scope="module")
def fraud() -> Traffic:
    return run("fraud")


def predictions(records: Traffic) -> list[Prediction]:
    return [r for _, r in records if isinstance(r, Prediction)]


def events(records: Traffic, duplicates: bool = False) -> list[Event]:
    return [r for _, r in records if isinstance(r, Event) and r.duplicate == duplicates]


def by_prediction(records: Traffic) -> dict[str, dict[str, list[Event]]]:
    """Each prediction's (unique) events, by step."""
    grouped: dict[str, dict[str, list[Event]]] = defaultdict(lambda: defaultdict(list))
    for e in events(records):
        grouped[e.prediction_id][e.step].append(e)
    return grouped


def assert_rate(hits: int, trials: int, p: float, what: str) -> None:
    assert trials > 500, f"{what}: too few trials ({trials}) to judge"
    se = math.sqrt(p * (1 - p) / trials)
    observed = hits / trials
    assert abs(observed - p) <= SE * se, f"{what}: {observed:.4f} vs {p} (+/- {SE * se:.4f})"


def assert_lognormal(samples: list[float], delay: Delay, what: str) -> None:
    """Median, p90 and p99 of the samples near the distribution's, and the spread of their logs
    near sigma, each within SE standard errors at this sample size."""
    n = len(samples)
    assert n > 200, f"{what}: too few samples ({n})"
    for q in (0.5, 0.9, 0.99):
        # A sample quantile's standard error, in log space: sigma * sqrt(q (1 - q) / n) / pdf(z_q).
        z = NormalDist().inv_cdf(q)
        tolerance = SE * delay.sigma * math.sqrt(q * (1 - q) / n) / NormalDist().pdf(z)
        observed, expected = nearest_rank(samples, q), delay.quantile(q)
        assert abs(math.log(observed / expected)) <= tolerance, (
            f"{what} p{round(q * 100)}: {observed:.3f} s vs {expected:.3f} s (+/- {tolerance:.1%}, n={n})"
        )
    spread = stdev(math.log(s) for s in samples)
    assert abs(spread / delay.sigma - 1) <= SE / math.sqrt(2 * n), f"{what}: sigma {spread:.3f} vs {delay.sigma}"


# --- recsys: the funnel, ratings and thumbs, annotators ---------------------------------------------


def test_recsys_click_through_and_funnel_ratios(recsys: Traffic) -> None:
    params = Recsys()
    served = len(predictions(recsys))
    assert abs(served / (RATE * DURATION) - 1) < 0.02  # Poisson arrivals at the rate
    steps = Counter(e.step for e in events(recsys))
    assert_rate(steps["click"], served, params.click_rate, "click-through")
    assert_rate(steps["add_to_cart"], steps["click"], params.cart_rate, "add_to_cart per click")
    assert_rate(steps["purchase"], steps["add_to_cart"], params.purchase_rate, "purchase per add_to_cart")
    assert_rate(steps["return"], steps["purchase"], params.return_rate, "return per purchase")
    assert_rate(steps["rating"], served, params.rating_rate, "users' ratings")
    assert_rate(steps["thumbs"], served, params.thumbs_rate, "thumbs")
    assert_rate(steps["annotation"] // 2, served, params.annotated_rate, "annotated predictions")


def test_recsys_funnel_is_ordered_and_each_step_follows_the_one_before(recsys: Traffic) -> None:
    funnel = ("click", "add_to_cart", "purchase", "return")
    for steps in by_prediction(recsys).values():
        present = [s for s in funnel if s in steps]
        assert present == list(funnel[: len(present)]), present  # no purchase without a cart, ...
        times = [steps[s][0].happened_at for s in present]
        assert times == sorted(times)
        assert all(e.actor.startswith("user:") for s in present for e in steps[s])


def test_recsys_step_delays_are_log_normal_with_the_scenario_parameters(recsys: Traffic) -> None:
    """Each funnel step's delay from the step before; ratings, thumbs and annotations from serving."""
    before = {"click": None, "add_to_cart": "click", "purchase": "add_to_cart", "return": "purchase"}
    samples: dict[str, list[float]] = defaultdict(list)
    for steps in by_prediction(recsys).values():
        for step, happened in steps.items():
            for e in happened:
                previous = before.get(step)
                start = e.served_at if previous is None else steps[previous][0].happened_at
                samples[step].append(e.happened_at - start)
    for step, delay in Recsys().delays.items():
        assert_lognormal(samples[step], delay, step)


def test_recsys_explicit_values_and_annotators_who_disagree(recsys: Traffic) -> None:
    params = Recsys()
    grouped = by_prediction(recsys)
    assert {e.value for steps in grouped.values() for e in steps["rating"]} == {1, 2, 3, 4, 5}
    assert {e.value for steps in grouped.values() for e in steps["thumbs"]} == {"up", "down"}
    pairs = [steps["annotation"] for steps in grouped.values() if steps["annotation"]]
    assert all(len(p) == 2 and len({e.actor for e in p}) == 2 for p in pairs)  # two different annotators
    assert {e.actor for p in pairs for e in p} == set(params.annotators)
    assert {e.type for p in pairs for e in p} == {"rating"}
    disagree = sum(1 for a, b in pairs if (a.value >= 4) != (b.value >= 4))
    flip = params.annotator_flip
    assert_rate(disagree, len(pairs), 2 * flip * (1 - flip), "annotators disagreeing")


# --- eta: trip durations around the predicted ETA ---------------------------------------------------


def test_eta_trip_durations_around_the_predicted_eta(eta: Traffic) -> None:
    params = Eta()
    served = {p.prediction_id: p for p in predictions(eta)}
    trips = [e for e in events(eta) if e.type == "trip_completed"]
    assert_rate(len(trips), len(served), params.completion_rate, "completed trips")
    ratios = [math.log(e.value / served[e.prediction_id].output["eta_s"]) for e in trips]
    assert abs(median(ratios)) < 0.01  # actual / predicted: median 1
    assert abs(stdev(ratios) / params.actual_sigma - 1) < 0.05
    assert_lognormal([p.output["eta_s"] for p in served.values()], params.eta, "predicted eta")
    # The feedback delay is the trip, played time_scale times faster.
    for e in trips[:1000]:
        assert (e.happened_at - e.served_at) * params.time_scale == pytest.approx(e.value, abs=0.05)
    assert_lognormal([e.happened_at - e.served_at for e in trips], params.delays["trip_completed"], "trip_completed")


def test_eta_duration_corrections(eta: Traffic) -> None:
    params = Eta()
    grouped = by_prediction(eta)
    corrections = [(steps["trip_completed"][0], c) for steps in grouped.values() for c in steps["duration_correction"]]
    assert_rate(
        len(corrections), sum(1 for s in grouped.values() if s["trip_completed"]), params.correction_rate, "corrections"
    )
    assert all(0.85 * t.value - 0.1 <= c.value <= 1.15 * t.value + 0.1 for t, c in corrections)
    assert_lognormal([c.happened_at - t.happened_at for t, c in corrections], params.correction, "correction")


# --- fraud: rare chargebacks, long after; analysts ----------------------------------------------------


def test_fraud_rare_chargebacks_with_long_delays_and_confirmations(fraud: Traffic) -> None:
    params = Fraud()
    served = len(predictions(fraud))
    unique = events(fraud)
    chargebacks = [e for e in unique if e.type == "chargeback"]
    expected = params.fraud_rate * params.chargeback_rate + (1 - params.fraud_rate) * params.friendly_chargeback_rate
    assert_rate(len(chargebacks), served, expected, "chargebacks")
    assert expected < 0.05  # rare
    assert_lognormal([e.happened_at - e.served_at for e in chargebacks], params.chargeback, "chargeback")
    confirmed = [e for e in unique if e.type == "fraud_confirmed"]
    assert len(confirmed) > 300
    assert {e.value for e in confirmed} == {"fraud", "legit"}
    assert {e.actor for e in confirmed} == set(params.analysts)
    assert_lognormal([e.happened_at - e.served_at for e in confirmed], params.review, "fraud_confirmed")
    # The chargebacks are the slowest feedback of all three scenarios.
    assert params.chargeback.median_s > max(d.median_s for d in Recsys().delays.values() if d is not params.chargeback)


# --- what every scenario shares: noise, order, reproducibility ----------------------------------------


@pytest.mark.parametrize("name", ["recsys", "eta", "fraud"])
def test_skewed_and_duplicate_events_at_their_rates(name: str, request: pytest.FixtureRequest) -> None:
    records: Traffic = request.getfixturevalue(name)
    noise = SCENARIOS[name].noise
    unique, again = events(records), events(records, duplicates=True)
    skewed = [e for e in unique if e.skewed]
    assert_rate(len(skewed), len(unique), noise.skew_rate, f"{name}: skewed")
    low, high = noise.skew_s
    assert all(e.served_at - high <= e.occurred_at <= e.served_at - low for e in skewed)
    assert all(e.occurred_at == e.happened_at >= e.served_at for e in unique if not e.skewed)
    assert_rate(len(again), len(unique), noise.duplicate_rate, f"{name}: duplicates")
    originals = {e.event_id: e for e in unique}
    assert len(originals) == len(unique)  # event ids are unique, but for the duplicates
    due = {(r.event_id, r.duplicate): d for d, r in records if isinstance(r, Event)}
    for e in again:
        assert replace(e, duplicate=False) == originals[e.event_id]  # the same record, sent again
        lag = due[(e.event_id, True)] - due[(e.event_id, False)]
        assert noise.duplicate_after_s[0] <= lag <= noise.duplicate_after_s[1]


@pytest.mark.parametrize("name", ["recsys", "eta", "fraud"])
def test_records_are_due_in_order_and_never_before_they_occurred(name: str, request: pytest.FixtureRequest) -> None:
    records: Traffic = request.getfixturevalue(name)
    dues = [d for d, _ in records]
    assert dues == sorted(dues)
    served_at: dict[str, float] = {}
    for due, r in records:
        if isinstance(r, Prediction):
            assert due == r.served_at <= DURATION  # serving stops at the duration
            served_at[r.prediction_id] = r.served_at
        else:
            assert r.prediction_id in served_at  # its prediction went first
            assert due >= r.occurred_at
            assert due >= r.happened_at >= r.served_at == served_at[r.prediction_id]
    assert dues[-1] > DURATION  # events still to come after serving stopped: the runner cuts them off


def test_a_seed_reproduces_the_same_traffic() -> None:
    first = run("recsys", seed=5, duration=5)
    assert first == run("recsys", seed=5, duration=5)
    assert first != run("recsys", seed=6, duration=5)
    assert len(first) > 5000


def test_the_generator_is_lazy() -> None:
    """The runner stops where it likes: taking the first records draws no more than needed."""
    records: Iterator[tuple[float, Record]] = traffic(SCENARIOS["eta"], 1e6, 1e6, random.Random(1))
    first = [next(records) for _ in range(10)]
    assert isinstance(first[0][1], Prediction)


# --- the runner's delay quantiles beside the service's histogram ---------------------------------------


def test_exact_quantiles_and_the_services_bucketed_ones_agree_within_a_bucket() -> None:
    rng = random.Random(3)
    for _ in range(50):
        delays = [max(0.0, rng.lognormvariate(1.0, 1.0) - 0.3) for _ in range(rng.randint(1, 400))]
        buckets = Counter(bucket_of(d) for d in delays)
        for q in (0.5, 0.9, 0.99):
            assert within_histogram(nearest_rank(delays, q), quantile(buckets, q, max(delays)) or 0.0)
    assert not within_histogram(1.0, 1.2)
    assert not within_histogram(1.0, 0.95)
