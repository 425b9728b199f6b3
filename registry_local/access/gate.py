"""Whether a request may do what it asks: the one place access is decided.

A request needs an action on a repository (server/access.py reads which from
its route). Who decides:

- **the origin**, for a pull from a repository whose origin is marked
  `authorize_at_origin`, unless the client proved to be one of this host's own
  users or tokens (whose credentials never leave this host): the client's own
  credentials are asked of the origin (origin/authorize.py), and the answer is
  remembered per credential and repository (access/decisions.py); a 404 there
  is a 404 here;
- else **the access policy** (`--access-policy`), for this host's own subjects
  and anonymous clients; credentials this host does not know are refused (401),
  or, where origins decide other repositories, count as anonymous;
- else, without a policy: this host's own users and tokens may do anything;
  where origins decide some repositories, no one else anything else (the
  bucket keeps names without their registry: fail closed); else, as before
  there was access control, with `--auth-htpasswd` or `--auth-token-file` no
  one else anything, and without them everyone everything.

A refusal is 401 with a challenge when the client sent no credentials (or
credentials that are wrong), so that engines log in and ask again, and 403
DENIED when its credentials are valid and do not allow it. An origin that
cannot be asked gives 503, unless `--authorize-offline-grace` lets a recent
grant stand.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass

from ..errors import (
    BackendUnavailable,
    BlobUnknown,
    ConfigError,
    Denied,
    ManifestUnknown,
    NameUnknown,
    Unauthorized,
    Unavailable,
)
from ..origin.authorize import Probe, Verdict, ask_origin
from ..origin.mapping import OriginMap, OriginRepo
from ..telemetry.metrics import AccessRecorder
from .decisions import Decision, Decisions
from .identity import Authenticator, Identity
from .policy import ANONYMOUS, EVERY_SUBJECT, Action
from .policy_file import PolicyFile
from .tokens import TOKEN_PREFIX, IssuedTokens

__all__ = ["Gate", "Need"]

log = logging.getLogger(__name__)

_SERVICE = "registry-local"
# What skopeo sends when it holds no credentials: an empty user and password.
_NO_ONE = "Basic " + base64.b64encode(b":").decode()


@dataclass(frozen=True)
class Need:
    """An action a request needs on a repository, and what would show an origin
    that the client may pull it (the manifest, blob or tag list it asks for)."""

    action: Action
    repository: str
    probe: Probe
    namespace: str | None = None  # the registry containerd names with ?ns=


class Gate:
    """Identifies requests and decides what they may do; see the module docstring."""

    def __init__(
        self,
        authenticator: Authenticator | None,
        policy: PolicyFile | None,
        decisions: Decisions | None,
        tokens: IssuedTokens | None,
        metrics: AccessRecorder,
    ) -> None:
        self.authenticator = authenticator
        self.policy = policy
        self.decisions = decisions
        self.tokens = tokens  # handed out at /-/token, when repositories are controlled
        self._metrics = metrics
        # Origins asked at once at most, so that a flood of unknown credentials
        # cannot take every connection the fills need.
        self._asking = asyncio.Semaphore(_ASKING)
        self._down: dict[str, float] = {}  # origin URL -> until when it is not asked

    @classmethod
    def create(
        cls,
        authenticator: Authenticator | None,
        policy: PolicyFile | None,
        decisions: Decisions | None,
        metrics: AccessRecorder,
    ) -> Gate:
        """Refuses a policy that names an htpasswd user `anonymous`: which would it mean?"""
        if policy is not None and authenticator is not None:
            if ANONYMOUS in authenticator.subjects():
                raise ConfigError(
                    f"--auth-htpasswd or --auth-token-file has a subject named {ANONYMOUS!r}: "
                    "an access policy reserves it for clients without credentials"
                )
        if policy is not None:
            known = authenticator.subjects() if authenticator is not None else frozenset()
            strangers = sorted(policy.current.subjects() - known - {ANONYMOUS, EVERY_SUBJECT})
            if strangers:
                log.warning(
                    "the access policy names subjects that no --auth-htpasswd user or "
                    "--auth-token-file token name is: %s (their rules grant nobody)",
                    ", ".join(strangers),
                )
        controlled = policy is not None or decisions is not None
        tokens = IssuedTokens(_TOKENS) if controlled else None
        return cls(authenticator, policy, decisions, tokens, metrics)

    @property
    def confines(self) -> bool:
        """Clients may read only some repositories (a policy, or origins deciding):
        then tokens are handed out at /-/token and challenges ask for them."""
        return self.tokens is not None

    @property
    def open(self) -> bool:
        """Nothing is checked: every request is let in as before access control."""
        return self.authenticator is None and self.policy is None and self.decisions is None

    def challenge(self, realm: str | None = None) -> dict[str, str]:
        """What a 401 asks for: with repositories controlled, a token from our
        realm (`/-/token`), as Docker Hub asks; else the credentials themselves."""
        if self.tokens is not None and realm is not None:
            return {"WWW-Authenticate": f'Bearer realm="{realm}",service="{_SERVICE}"'}
        if self.authenticator is not None:
            return self.authenticator.challenge()
        return {"WWW-Authenticate": f'Basic realm="{_SERVICE}"'}

    async def identify(self, authorization: str | None) -> Identity:
        if not authorization or authorization.strip() == _NO_ONE:
            return Identity(None)
        scheme, _, value = authorization.partition(" ")
        if self.tokens is not None and scheme.lower() == "bearer":
            if value.strip().startswith(TOKEN_PREFIX):
                issued = self.tokens.identity(value.strip())
                return issued if issued is not None else Identity(None, authorization, True)
        if self.authenticator is None:
            return Identity(None, authorization)
        return await self.authenticator.identify(authorization)

    def admit(self, identity: Identity, *, ping: bool = False, presented: bool = False) -> None:
        """A request that names no repository (the /v2/ ping, the catalog, warm-up,
        a token): let in whoever could be allowed something. `ping`: the /v2/
        check engines use to learn whether to log in, so a client that presented
        nothing (`presented`: no Authorization at all) gets the challenge whenever
        credentials could matter."""
        if identity.rejected:
            raise Unauthorized("wrong credentials", headers=self.challenge())
        if identity.anonymous:
            needs_login = self.authenticator is not None or self.decisions is not None
            if ping and needs_login and not presented:
                raise Unauthorized(headers=self.challenge())
            if self.authenticator is not None and self.policy is None and self.decisions is None:
                raise Unauthorized(headers=self.challenge())
            return
        if identity.subject is None and self.decisions is None:
            raise Unauthorized("credentials not known here", headers=self.challenge())

    def issue(self, identity: Identity) -> tuple[str, int]:
        """A token for whoever `admit` let in (the /-/token endpoint)."""
        self.admit(identity)
        assert self.tokens is not None
        return self.tokens.issue(identity)

    async def check(self, identity: Identity, need: Need, origins: OriginMap) -> None:
        """Return if `identity` may do what `need` says; else raise Unauthorized,
        Denied or Unavailable (an origin that decides cannot be asked)."""
        if identity.rejected:
            self._metrics.decided("authentication", "refused")
            raise Unauthorized("wrong credentials", headers=self.challenge())
        at_origin = self._deciding_origin(identity, need, origins)
        if at_origin is not None:
            await self._ask_origin(identity, need, at_origin)
            return
        if identity.authorization is not None and identity.subject is None:
            if self.decisions is None:
                self._metrics.decided("authentication", "refused")
                raise Unauthorized("credentials not known here", headers=self.challenge())
            # Not ours: an origin's, for a repository no origin decides. They
            # prove nothing here, so they get what anonymous clients get.
        if self.policy is not None:
            allowed = self.policy.current.allows(identity.subject, need.repository, need.action)
            self._metrics.decided("policy", "granted" if allowed else "refused")
            if not allowed:
                raise self._refusal(identity, need)
        elif identity.subject is None and self.decisions is not None:
            # Origins decide some repositories, and no policy grants anything
            # else: the bucket keeps names without their registry, so serving
            # the rest to anyone would serve the origins' repositories too.
            self._metrics.decided("policy", "refused")
            raise self._refusal(identity, need)
        elif identity.subject is None and self.authenticator is not None:
            self._metrics.decided("authentication", "refused")
            raise Unauthorized(headers=self.challenge())

    def visible(self, identity: Identity, repository: str, origins: OriginMap) -> bool:
        """Whether the catalog shows `repository` to `identity`: pull granted by the
        policy, or by its origin within the decisions remembered (the catalog asks
        no origin)."""
        need = Need("pull", repository, ("tags", ""))
        at_origin = self._deciding_origin(identity, need, origins)
        if at_origin is not None:
            assert self.decisions is not None
            return self.decisions.granted_recently(identity.authorization, _key(at_origin))
        if self.policy is not None:
            return self.policy.current.allows(identity.subject, repository, "pull")
        if identity.subject is not None:
            return True
        return self.authenticator is None and self.decisions is None

    def _deciding_origin(
        self, identity: Identity, need: Need, origins: OriginMap
    ) -> OriginRepo | None:
        if self.decisions is None or need.action != "pull" or identity.local:
            return None
        repo = origins.repo_for(need.repository, need.namespace)
        if repo is None or not repo.origin.settings.authorize_at_origin:
            return None
        return repo

    async def _ask_origin(self, identity: Identity, need: Need, repo: OriginRepo) -> None:
        assert self.decisions is not None
        authorization = identity.authorization

        async def ask() -> Verdict:
            origin = repo.origin.url
            if self._down.get(origin, 0.0) > time.monotonic():
                raise BackendUnavailable("authorize", origin, "it did not answer moments ago")
            try:
                async with self._asking:
                    verdict = await ask_origin(repo.origin, authorization, repo.remote, need.probe)
            except BackendUnavailable:
                self._metrics.asked_origin("unavailable")
                self._down[origin] = time.monotonic() + _DOWN_FOR
                raise
            self._metrics.asked_origin(verdict.value)
            return verdict

        decision: Decision = await self.decisions.decide(authorization, _key(repo), ask)
        self._metrics.decided("origin", decision.outcome)
        if decision.allowed:
            return
        if decision.outcome == "absent":
            raise _absent(need)
        if decision.outcome == "unavailable":
            grace = " and no grant within --authorize-offline-grace is remembered"
            raise Unavailable(
                f"cannot tell whether you may pull {need.repository}: its origin could not "
                f"be asked{grace if self.decisions.grace else ''}; try again later"
            )
        raise self._refusal(identity, need, by_origin=True)

    def _refusal(self, identity: Identity, need: Need, by_origin: bool = False) -> Exception:
        if identity.anonymous:
            return Unauthorized(
                f"authentication required to {need.action} {need.repository}",
                headers=self.challenge(),
            )
        who = "the origin does not let these credentials" if by_origin else "you may not"
        return Denied(f"{who} {need.action} {need.repository}")


_TOKENS = 100_000  # live tokens at most: the oldest are dropped first
_ASKING = 16  # checks asked of origins at once
# Seconds an origin that could not be asked is not asked again: while it is
# down, each request is answered at once (grace or 503), not after a timeout.
_DOWN_FOR = 5.0


def _absent(need: Need) -> Exception:
    """The origin answered 404 to the client's credentials: so does the cache (a
    tag may be missing, or the repository hidden from them)."""
    why = "not at its origin, or not visible to these credentials"
    kind = need.probe[0]
    detail = {"name": need.repository}
    if kind == "manifests":
        return ManifestUnknown(f"{need.repository}: {why}", detail=detail)
    if kind == "blobs":
        return BlobUnknown(f"{need.repository}: {why}", detail=detail)
    return NameUnknown(f"{need.repository}: {why}", detail=detail)


def _key(repo: OriginRepo) -> str:
    """What a decision is about: one repository at one origin."""
    return f"{repo.origin.url}/{repo.remote}"
