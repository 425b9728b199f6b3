"""Access control: who was let in or refused, by what, and the policy file's reloads."""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

from .shared import PREFIX

__all__ = ["AccessRecorder", "AccessVerdict", "DecidedBy", "OriginAnswer"]

DecidedBy = Literal["policy", "origin", "authentication"]
# granted; refused; grace: allowed by a recent grant while the origin is down;
# unavailable: refused because the origin could not be asked.
# absent: the origin has no such thing for these credentials (answered 404).
AccessVerdict = Literal["granted", "refused", "absent", "grace", "unavailable"]
OriginAnswer = Literal["granted", "refused", "absent", "unavailable"]


class AccessRecorder:
    """Access decisions, the checks asked of origins, and policy reloads."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._decisions = Counter(
            PREFIX + "access_decisions",
            "Requests let in or refused, by what decided and the verdict.",
            ["by", "verdict"],
            registry=r,
        )
        self._origin_checks = Counter(
            PREFIX + "access_origin_checks",
            "Clients' credentials asked of an origin (--authorize-at-origin), by its answer; "
            "decisions remembered or joined are not counted.",
            ["answer"],
            registry=r,
        )
        self._reloads = Counter(
            PREFIX + "access_policy_reloads",
            "Changes of the --access-policy file: applied, or rejected (the last good "
            "policy stays).",
            ["outcome"],
            registry=r,
        )
        self._rules = Gauge(
            PREFIX + "access_policy_rules", "Rules of the access policy in force.", registry=r
        )
        for by in get_args(DecidedBy):
            for verdict in get_args(AccessVerdict):
                self._decisions.labels(by, verdict)
        for answer in get_args(OriginAnswer):
            self._origin_checks.labels(answer)
        for outcome in ("applied", "rejected"):
            self._reloads.labels(outcome)

    def decided(self, by: DecidedBy, verdict: AccessVerdict) -> None:
        """A request's access decided (once per repository and action it needs)."""
        self._decisions.labels(by, verdict).inc()

    def asked_origin(self, answer: OriginAnswer) -> None:
        """A client's credentials asked of an origin, and what it answered."""
        self._origin_checks.labels(answer).inc()

    def policy_loaded(self, rules: int) -> None:
        self._rules.set(rules)

    def policy_reloaded(self, applied: bool) -> None:
        """The policy file changed: its new rules are in force, or were rejected."""
        self._reloads.labels("applied" if applied else "rejected").inc()
