"""Decisions of the origin, remembered: pure logic, with a clock the test turns and
an `ask` that counts (and waits, where a test holds it) instead of an origin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from registry_local.access.decisions import Decision, Decisions
from registry_local.errors import BackendUnavailable
from registry_local.origin.authorize import Verdict

CREDENTIAL = "Basic YWxpY2U6YWxpY2UtcHc="  # alice:alice-pw
TTL, GRACE = 60.0, 600.0


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Asker:
    """An origin's stand-in: answers `verdict` (or raises when `down`), counting
    asks; with `gate`, each ask waits for the test to set it."""

    verdict: Verdict = Verdict.GRANTED
    down: bool = False
    gate: asyncio.Event | None = None
    asks: int = 0
    waiting: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self) -> Callable[[], Awaitable[Verdict]]:
        return self.ask

    async def ask(self) -> Verdict:
        self.asks += 1
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        if self.down:
            raise BackendUnavailable("authorize", "origin", "the origin could not be asked")
        return self.verdict


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def decisions(clock: Clock) -> AsyncIterator[Decisions]:
    made = Decisions(TTL, GRACE, 100, b"k" * 32, clock)
    yield made
    await made.close()


async def test_a_grant_is_remembered_until_its_ttl_ends(decisions: Decisions, clock: Clock) -> None:
    origin = Asker()
    assert await decisions.decide(CREDENTIAL, "team-a/app", origin()) == Decision(
        True, "granted", asked=True
    )
    assert decisions.granted_recently(CREDENTIAL, "team-a/app")
    clock.now += TTL - 1
    assert await decisions.decide(CREDENTIAL, "team-a/app", origin()) == Decision(
        True, "granted", asked=False
    )
    assert origin.asks == 1

    clock.now += 1
    assert not decisions.granted_recently(CREDENTIAL, "team-a/app")
    origin.verdict = Verdict.REFUSED  # revoked at the origin meanwhile
    assert await decisions.decide(CREDENTIAL, "team-a/app", origin()) == Decision(
        False, "refused", asked=True
    )
    assert origin.asks == 2


async def test_a_refusal_is_remembered_and_absence_is_not(
    decisions: Decisions, clock: Clock
) -> None:
    refusing = Asker(Verdict.REFUSED)
    for _ in range(3):
        decision = await decisions.decide(CREDENTIAL, "team-b/app", refusing())
        assert (decision.allowed, decision.outcome) == (False, "refused")
    assert refusing.asks == 1
    assert not decisions.granted_recently(CREDENTIAL, "team-b/app")

    missing = Asker(Verdict.ABSENT)
    for _ in range(3):
        assert await decisions.decide(CREDENTIAL, "team-a/app", missing()) == Decision(
            False, "absent", asked=True
        )
    assert missing.asks == 3
    # The tag appears: granted at once, not minutes later.
    assert (await decisions.decide(CREDENTIAL, "team-a/app", Asker()())).allowed


async def test_concurrent_decides_for_one_key_ask_once(decisions: Decisions) -> None:
    gate = asyncio.Event()
    origin = Asker(gate=gate)
    waiting = [
        asyncio.create_task(decisions.decide(CREDENTIAL, "team-a/app", origin())) for _ in range(50)
    ]
    await origin.waiting.wait()  # the ask is running, every caller has joined it
    gate.set()

    found = await asyncio.gather(*waiting)

    assert origin.asks == 1
    assert all(d.allowed and d.outcome == "granted" for d in found)
    assert sum(d.asked for d in found) == 1  # one asked; the rest joined it


async def test_credentials_and_repositories_are_keys_of_their_own(
    decisions: Decisions,
) -> None:
    origin = Asker()
    pairs = [
        (CREDENTIAL, "team-a/app"),
        (CREDENTIAL, "team-a/app2"),
        ("Basic Ym9iOmJvYi1wdw==", "team-a/app"),
        (None, "team-a/app"),
        ("", "team-a/app"),
        ("a", "bteam/app"),  # run together, these two would read alike
        ("ab", "team/app"),
    ]
    for credential, repository in pairs:
        await decisions.decide(credential, repository, origin())
    assert origin.asks == len(pairs)
    assert len({decisions.key_of(*pair) for pair in pairs}) == len(pairs)
    assert decisions.key_of(CREDENTIAL, "x") != Decisions(TTL, GRACE, 100, b"o" * 32).key_of(
        CREDENTIAL, "x"
    )  # another process's key: another fingerprint


async def test_memory_is_bounded_and_the_least_recently_used_goes(clock: Clock) -> None:
    decisions = Decisions(TTL, GRACE, 3, b"k" * 32, clock)
    origin = Asker()
    for name in ("a", "b", "c"):
        await decisions.decide(CREDENTIAL, name, origin())
    await decisions.decide(CREDENTIAL, "a", origin())  # used: "b" is now the oldest
    await decisions.decide(CREDENTIAL, "d", origin())
    assert origin.asks == 4
    assert [decisions.granted_recently(CREDENTIAL, n) for n in "abcd"] == [
        True,
        False,
        True,
        True,
    ]
    # The grace memory is bounded too: "b" was granted, but is no longer held.
    origin.down = True
    assert (await decisions.decide(CREDENTIAL, "b", origin())).outcome == "unavailable"
    await decisions.close()


async def test_an_unavailable_origin_allows_recent_grants_within_grace(
    decisions: Decisions, clock: Clock
) -> None:
    origin = Asker()
    await decisions.decide(CREDENTIAL, "team-a/app", origin())
    origin.down = True
    clock.now += TTL  # the grant has expired: ask again, and the origin is down

    assert await decisions.decide(CREDENTIAL, "team-a/app", origin()) == Decision(
        True, "grace", asked=True
    )
    assert await decisions.decide(None, "team-a/app", origin()) == Decision(
        False, "unavailable", asked=True
    )  # never granted
    assert origin.asks == 3  # grace is not remembered: each decide asks again

    clock.now += GRACE - TTL  # the grant was `GRACE` seconds ago: still within
    assert (await decisions.decide(CREDENTIAL, "team-a/app", origin())).outcome == "grace"
    clock.now += 1
    assert await decisions.decide(CREDENTIAL, "team-a/app", origin()) == Decision(
        False, "unavailable", asked=True
    )


async def test_a_refusal_ends_the_grace_and_no_grace_means_none(clock: Clock) -> None:
    decisions = Decisions(TTL, GRACE, 100, b"k" * 32, clock)
    origin = Asker()
    await decisions.decide(CREDENTIAL, "team-a/app", origin())
    clock.now += TTL
    origin.verdict = Verdict.REFUSED
    await decisions.decide(CREDENTIAL, "team-a/app", origin())
    clock.now += TTL
    origin.down = True
    assert (await decisions.decide(CREDENTIAL, "team-a/app", origin())).outcome == "unavailable"

    graceless = Decisions(TTL, 0, 100, b"k" * 32, clock)
    origin = Asker()
    await graceless.decide(CREDENTIAL, "team-a/app", origin())
    clock.now += TTL
    origin.down = True
    assert (await graceless.decide(CREDENTIAL, "team-a/app", origin())).outcome == "unavailable"
    await decisions.close()
    await graceless.close()


async def test_the_credential_is_never_held(decisions: Decisions) -> None:
    await decisions.decide(CREDENTIAL, "team-a/app", Asker()())
    await decisions.decide(CREDENTIAL, "team-b/app", Asker(Verdict.REFUSED)())

    key = decisions.key_of(CREDENTIAL, "team-a/app")
    assert len(key) == 32 and CREDENTIAL.encode() not in key
    secret = CREDENTIAL.removeprefix("Basic ")
    held = list(_everything(decisions))
    assert held  # the walk reached the memory
    assert not [v for v in held if CREDENTIAL in v or secret in v or "alice" in v]
    assert CREDENTIAL not in repr(decisions)


async def test_create_picks_a_key_of_its_own() -> None:
    one, other = Decisions.create(TTL, GRACE), Decisions.create(TTL, GRACE)
    assert one.key_of(CREDENTIAL, "x") != other.key_of(CREDENTIAL, "x")
    await one.close()
    await other.close()


def _everything(value: object, seen: set[int] | None = None) -> list[str]:
    """Every str and bytes (decoded) reachable from `value`'s attributes and items."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    found: list[str] = []
    children: list[object] = []
    if isinstance(value, dict):
        children = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple | set):
        children = list(value)
    elif hasattr(value, "__dict__") and not callable(value):
        children = list(vars(value).values())
    for child in children:
        found += _everything(child, seen)
    return found


async def test_close_ends_the_asks_still_running(clock: Clock) -> None:
    decisions = Decisions(TTL, GRACE, 100, b"k" * 32, clock)
    origin = Asker(gate=asyncio.Event())  # never released
    waiting = asyncio.create_task(decisions.decide(CREDENTIAL, "team-a/app", origin()))
    await origin.waiting.wait()

    await decisions.close()

    with pytest.raises(asyncio.CancelledError):
        await waiting
