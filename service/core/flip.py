"""How sure a provisional implicit negative is: p_flip, the probability that a counted positive
still arrives before its seal, given that none came in the w seconds it has waited.

With I(d) the cumulative incidence of positives per served prediction (the window advisor's
life-table estimate, service/core/advisor.py) and H the seal's delay (window + allowed lateness):

    p_flip(w) = P(positive in (w, H] | none by w) = (I(H) - I(w)) / (1 - I(w))

(I(d) = p * F(d) for an eventual positive rate p and a delay CDF F.) This reads I as a probability,
true when a prediction sees at most one event of the type. With several positive types (click,
add_to_cart, purchase) the one most likely still to come decides: exact when they follow one
another (a purchase only after a click, so the first positive is always a click), a lower bound
when they are independent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from service.core.advisor import Cohort, Cumulative, incidence


@dataclass(frozen=True, slots=True)
class FlipCurve:
    seal_s: float  # H: a label is sealed this long after it was served
    curves: tuple[Cumulative, ...]  # one per positive event type, each known as far as the seal

    def p_flip(self, waited_s: float) -> float:
        """The probability that a positive still arrives by the seal, none having come by waited_s."""
        if waited_s >= self.seal_s:
            return 0.0
        return max((_flip(c, waited_s, self.seal_s) for c in self.curves), default=0.0)


def _flip(curve: Cumulative, waited_s: float, seal_s: float) -> float:
    by_now = min(curve.at(max(waited_s, 0.0)), 1.0)
    if by_now >= 1.0:
        return 0.0  # every prediction has had its positive: none is still to come
    return min(max((curve.at(seal_s) - by_now) / (1.0 - by_now), 0.0), 1.0)


def flip_curve(cohorts_by_type: Iterable[list[Cohort]], seal_s: float) -> FlipCurve | None:
    """The curve from each positive type's served-hour cohorts; None until some cohort of each has
    been watched as long as the seal (before that, the positives still to come are unknown: a
    shorter curve would read them as none)."""
    curves = []
    for cohorts in cohorts_by_type:
        curve = Cumulative(incidence(cohorts, seal_s)[0])
        if curve.known_until < seal_s:
            return None
        curves.append(curve)
    return FlipCurve(seal_s, tuple(curves))
