"""The traffic model of `labelloop simulate`, pure: no I/O, no clock, every draw from the
random.Random it is given, so a seed reproduces the same traffic.

traffic() yields (due, record) in due order: due is when the record is sent, in seconds from
the start of the run. Predictions are served as a Poisson process for `duration` seconds; each
one's events are drawn when it is served (what its user, the annotators or the world will do,
with log-normal delays) and wait in a heap until due. Times in records are offsets from the
start too; the runner turns them into timestamps. An event is never due before it occurred,
so the runner never sends an occurred_at in the future.

Delays are scaled so that a 30-second run shows feedback (a click a few seconds after serving,
a chargeback a quarter of a minute): they are the shape of real feedback loops, not their length.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Delay:
    """Log-normal: median `median_s` seconds, `sigma` the standard deviation of its logarithm."""

    median_s: float
    sigma: float

    def sample(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median_s), self.sigma)

    def quantile(self, q: float) -> float:
        return self.median_s * math.exp(self.sigma * NormalDist().inv_cdf(q))


@dataclass(frozen=True, slots=True)
class Prediction:
    prediction_id: str
    use_case: str
    served_at: float  # seconds from the start of the run
    model: str
    model_version: str
    subject_id: str
    features: dict[str, Any]
    output: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    prediction_id: str
    type: str
    occurred_at: float  # as stamped: before served_at when the sender's clock is skewed
    value: Any
    actor: str
    served_at: float  # of its prediction
    happened_at: float  # when it really happened (occurred_at unless skewed)
    step: str  # which delay drew it (Scenario.delays), e.g. "annotation" for an annotator's rating
    skewed: bool = False
    duplicate: bool = False  # the same event_id and content sent again


Record = Prediction | Event


@dataclass(frozen=True, slots=True)
class Happening:
    """An event a scenario draws for a prediction: its type, when it happens, what it says."""

    type: str
    at: float
    value: Any
    actor: str
    step: str


@dataclass(frozen=True, slots=True)
class Noise:
    """What real senders add: clocks behind the server's, and retries that send an event twice."""

    skew_rate: float = 0.02  # of events: stamped this much before their prediction was served
    skew_s: tuple[float, float] = (0.05, 1.5)
    duplicate_rate: float = 0.03  # of events: the same record sent again this much later
    duplicate_after_s: tuple[float, float] = (0.2, 3.0)


class Scenario(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def use_case(self) -> str: ...

    @property
    def noise(self) -> Noise: ...

    @property
    def delays(self) -> Mapping[str, Delay]:
        """Each step's delay: from serving, or from the step before it in a funnel."""
        ...

    def serve(self, prediction_id: str, at: float, rng: random.Random) -> tuple[Prediction, list[Happening]]: ...


@dataclass(frozen=True)
class Recsys:
    """Recommendations: click -> add_to_cart -> purchase -> some returns, each step a delay after
    the one before; users' ratings (1-5) and thumbs; two annotators rating some predictions, who
    disagree."""

    name: str = "recsys"
    use_case: str = "recsys"
    click_rate: float = 0.25  # of served
    cart_rate: float = 0.3  # of clicks
    purchase_rate: float = 0.5  # of carts
    return_rate: float = 0.15  # of purchases
    rating_rate: float = 0.06  # of served: the user rates it
    thumbs_rate: float = 0.1  # of served: the user gives a thumb
    annotated_rate: float = 0.05  # of served: two annotators rate it
    annotator_flip: float = 0.25  # an annotator's rating lands on the other side of the truth
    annotators: tuple[str, ...] = ("annotator:ana", "annotator:bo", "annotator:chen")
    users: int = 2000
    items: int = 5000
    noise: Noise = field(default_factory=Noise)
    step_delays: tuple[tuple[str, Delay], ...] = (
        ("click", Delay(3.0, 0.6)),  # from serving
        ("add_to_cart", Delay(4.0, 0.5)),  # from the click
        ("purchase", Delay(6.0, 0.5)),  # from the add_to_cart
        ("return", Delay(10.0, 0.5)),  # from the purchase
        ("rating", Delay(8.0, 0.7)),  # from serving
        ("thumbs", Delay(4.0, 0.7)),  # from serving
        ("annotation", Delay(12.0, 0.4)),  # an annotator's rating, from serving
    )

    @property
    def delays(self) -> Mapping[str, Delay]:
        return dict(self.step_delays)

    def serve(self, prediction_id: str, at: float, rng: random.Random) -> tuple[Prediction, list[Happening]]:
        d = self.delays
        user = f"user:{rng.randint(1, self.users)}"
        position = rng.randint(1, 10)
        prediction = Prediction(
            prediction_id,
            self.use_case,
            at,
            model="ranker",
            model_version="7",
            subject_id=user,
            features={"position": position, "device": rng.choice(("ios", "android", "web"))},
            output={"item": f"sku-{rng.randint(1, self.items)}", "score": round(rng.random(), 3)},
        )
        happenings: list[Happening] = []
        clicked = rng.random() < self.click_rate
        if clicked:
            t = at
            for step, rate in (("click", 1.0), ("add_to_cart", self.cart_rate), ("purchase", self.purchase_rate)):
                if rng.random() >= rate:
                    break
                t += d[step].sample(rng)
                happenings.append(Happening(step, t, None, user, step))
            else:
                if rng.random() < self.return_rate:
                    happenings.append(Happening("return", t + d["return"].sample(rng), None, user, "return"))
        if rng.random() < self.rating_rate:
            stars = rng.choice((3, 4, 5) if clicked else (1, 2, 3))
            happenings.append(Happening("rating", at + d["rating"].sample(rng), stars, user, "rating"))
        if rng.random() < self.thumbs_rate:
            up = rng.random() < (0.8 if clicked else 0.3)
            happenings.append(Happening("thumbs", at + d["thumbs"].sample(rng), "up" if up else "down", user, "thumbs"))
        if rng.random() < self.annotated_rate:
            for annotator in rng.sample(self.annotators, 2):
                relevant = clicked != (rng.random() < self.annotator_flip)
                stars = rng.choice((4, 5) if relevant else (1, 2))
                happenings.append(Happening("rating", at + d["annotation"].sample(rng), stars, annotator, "annotation"))
        return prediction, happenings


@dataclass(frozen=True)
class Eta:
    """Trip ETAs: most trips complete, their real duration (seconds, log-normal around the
    predicted ETA) the natural label; a few are corrected afterwards by ops. The feedback delay
    is the trip's duration, played `time_scale` times faster."""

    name: str = "eta"
    use_case: str = "eta"
    eta: Delay = Delay(900.0, 0.5)  # the predicted ETA, seconds
    actual_sigma: float = 0.25  # actual / predicted is log-normal with median 1
    completion_rate: float = 0.92  # the others are cancelled: no label (expired at the seal)
    time_scale: float = 100.0  # a 15-minute trip completes 9 s after serving
    correction_rate: float = 0.05  # of completed trips
    correction: Delay = Delay(6.0, 0.5)  # after completion
    riders: int = 5000
    noise: Noise = field(default_factory=Noise)

    @property
    def delays(self) -> Mapping[str, Delay]:
        trip = Delay(self.eta.median_s / self.time_scale, math.hypot(self.eta.sigma, self.actual_sigma))
        return {"trip_completed": trip, "duration_correction": self.correction}

    def serve(self, prediction_id: str, at: float, rng: random.Random) -> tuple[Prediction, list[Happening]]:
        eta_s = self.eta.sample(rng)
        rider = f"rider:{rng.randint(1, self.riders)}"
        prediction = Prediction(
            prediction_id,
            self.use_case,
            at,
            model="eta-gbm",
            model_version="12",
            subject_id=rider,
            features={"distance_km": round(eta_s / 120 * rng.uniform(0.8, 1.2), 2), "hour": rng.randint(0, 23)},
            output={"eta_s": round(eta_s, 1)},
        )
        happenings: list[Happening] = []
        if rng.random() < self.completion_rate:
            actual = round(eta_s, 1) * rng.lognormvariate(0.0, self.actual_sigma)
            done = at + actual / self.time_scale
            happenings.append(Happening("trip_completed", done, round(actual, 1), "system", "trip_completed"))
            if rng.random() < self.correction_rate:
                corrected = round(actual * rng.uniform(0.85, 1.15), 1)
                when = done + self.correction.sample(rng)
                happenings.append(
                    Happening("duration_correction", when, corrected, "annotator:ops", "duration_correction")
                )
        return prediction, happenings


@dataclass(frozen=True)
class Fraud:
    """Card transactions scored for fraud: rare chargebacks, long after (most of the real ones
    from fraud, a few friendly), and analysts confirming some of the high-scored ones."""

    name: str = "fraud"
    use_case: str = "fraud"
    fraud_rate: float = 0.03
    chargeback_rate: float = 0.7  # of fraudulent transactions
    friendly_chargeback_rate: float = 0.005  # of legitimate ones
    review_threshold: float = 0.7  # score at or above which analysts may review
    review_rate: float = 0.6  # of those
    analyst_error: float = 0.1
    analysts: tuple[str, ...] = ("annotator:analyst-1", "annotator:analyst-2")
    chargeback: Delay = Delay(15.0, 0.6)
    review: Delay = Delay(6.0, 0.5)
    accounts: int = 20000
    noise: Noise = field(default_factory=Noise)

    @property
    def delays(self) -> Mapping[str, Delay]:
        return {"chargeback": self.chargeback, "fraud_confirmed": self.review}

    def serve(self, prediction_id: str, at: float, rng: random.Random) -> tuple[Prediction, list[Happening]]:
        fraud = rng.random() < self.fraud_rate
        score = rng.betavariate(5, 2) if fraud else rng.betavariate(1, 8)
        account = f"account:{rng.randint(1, self.accounts)}"
        prediction = Prediction(
            prediction_id,
            self.use_case,
            at,
            model="fraud-xgb",
            model_version="3",
            subject_id=account,
            features={"amount": round(rng.lognormvariate(3.5, 1.0), 2), "mcc": rng.choice((5411, 5812, 5999, 7995))},
            output={"score": round(score, 4)},
        )
        happenings: list[Happening] = []
        if rng.random() < (self.chargeback_rate if fraud else self.friendly_chargeback_rate):
            happenings.append(Happening("chargeback", at + self.chargeback.sample(rng), None, "system", "chargeback"))
        if score >= self.review_threshold and rng.random() < self.review_rate:
            says_fraud = fraud != (rng.random() < self.analyst_error)
            value = "fraud" if says_fraud else "legit"
            analyst = rng.choice(self.analysts)
            happenings.append(
                Happening("fraud_confirmed", at + self.review.sample(rng), value, analyst, "fraud_confirmed")
            )
        return prediction, happenings


SCENARIOS: dict[str, Scenario] = {"recsys": Recsys(), "eta": Eta(), "fraud": Fraud()}


def traffic(
    scenario: Scenario, rate: float, duration: float, rng: random.Random, run: str = "sim"
) -> Iterator[tuple[float, Record]]:
    """Every record of a run in due order (ties: in the order drawn): predictions served at
    `rate` per second (Poisson) up to `duration`, then the events still to come, however late.
    The caller stops where it likes; what it does not take never happens."""
    noise = scenario.noise
    heap: list[tuple[float, int, Event]] = []
    order = itertools.count()
    served = 0
    at = rng.expovariate(rate)
    while at <= duration:
        while heap and heap[0][0] <= at:
            due, _, event = heapq.heappop(heap)
            yield due, event
        prediction_id = f"{run}-{served:07d}"
        prediction, happenings = scenario.serve(prediction_id, at, rng)
        yield at, prediction
        for number, h in enumerate(happenings):
            skewed = rng.random() < noise.skew_rate
            occurred = at - rng.uniform(*noise.skew_s) if skewed else h.at
            event = Event(
                event_id=f"{prediction_id}-e{number}",
                prediction_id=prediction_id,
                type=h.type,
                occurred_at=occurred,
                value=h.value,
                actor=h.actor,
                served_at=at,
                happened_at=h.at,
                step=h.step,
                skewed=skewed,
            )
            heapq.heappush(heap, (h.at, next(order), event))
            if rng.random() < noise.duplicate_rate:
                again = h.at + rng.uniform(*noise.duplicate_after_s)
                heapq.heappush(heap, (again, next(order), replace(event, duplicate=True)))
        served += 1
        at += rng.expovariate(rate)
    while heap:
        due, _, event = heapq.heappop(heap)
        yield due, event
