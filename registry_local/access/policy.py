"""The access policy: which subjects may pull, push or delete in which repositories.

A YAML file (`--access-policy`) of rules; a request is allowed when one rule
names its subject, a pattern matching its repository, and its action:

    rules:
      - subjects: [alice, ci-token]   # htpasswd users, token names, anonymous, or *
        repositories: ["team-a/*"]
        actions: [pull, push]
      - subjects: [anonymous]
        repositories: ["public/**"]
        actions: [pull]

Subjects: a user of `--auth-htpasswd`, the name of a token of `--auth-token-file`
(`NAME:TOKEN` lines), `anonymous` (a request without credentials), or `*`
(every authenticated subject; anonymous is never implied). Patterns are matched
against the whole repository name: `*` stands for any characters within one
path component, `**` for any number of components (`team-a/**` matches
`team-a/app` and `team-a/x/app`, not `team-a`), anything else is literal. What
no rule grants is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import yaml

from ..config.files import read_text
from ..errors import ConfigError

__all__ = ["ACTIONS", "ANONYMOUS", "EVERY_SUBJECT", "Action", "Policy", "Rule"]

Action = Literal["pull", "push", "delete"]
ACTIONS: tuple[Action, ...] = get_args(Action)
ANONYMOUS = "anonymous"
EVERY_SUBJECT = "*"

_RULE_KEYS = frozenset({"subjects", "repositories", "actions"})
# A pattern is a repository name with `*` and `**` allowed in its components.
_PATTERN = re.compile(r"[a-z0-9._*-]+(?:/[a-z0-9._*-]+)*")


@dataclass(frozen=True)
class Rule:
    """One rule: these subjects may do these actions in repositories matching these
    patterns."""

    subjects: frozenset[str]
    actions: frozenset[Action]
    _compiled: re.Pattern[str]  # the repository patterns, as one expression

    def grants(self, subject: str | None, repository: str, action: Action) -> bool:
        return (
            action in self.actions
            and _names(self.subjects, subject)
            and self._compiled.fullmatch(repository) is not None
        )


@dataclass(frozen=True)
class Policy:
    """The rules of one policy file, as loaded; see the module docstring."""

    rules: tuple[Rule, ...]

    @classmethod
    def read(cls, path: Path) -> Policy:
        """The policy in the file at `path`. Raises ConfigError saying what is wrong
        and where."""
        return cls.parse(read_text(path, "--access-policy"), str(path))

    @classmethod
    def parse(cls, text: str, source: str) -> Policy:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--access-policy {source} is not valid YAML: {exc}") from None
        if not isinstance(document, dict) or set(document) != {"rules"}:
            raise ConfigError(f"--access-policy {source}: expected a mapping with `rules:` only")
        rules = document["rules"]
        if not isinstance(rules, list):
            raise ConfigError(f"--access-policy {source}: `rules` must be a list")
        found = (_rule(entry, f"{source}: rule {n}") for n, entry in enumerate(rules, 1))
        return cls(tuple(found))

    def allows(self, subject: str | None, repository: str, action: Action) -> bool:
        """Whether a rule grants `action` on `repository` to `subject` (None: anonymous)."""
        return any(rule.grants(subject, repository, action) for rule in self.rules)

    def subjects(self) -> frozenset[str]:
        """Every subject a rule names (to warn about names nobody can log in as)."""
        return frozenset(s for rule in self.rules for s in rule.subjects)


def _names(subjects: frozenset[str], subject: str | None) -> bool:
    if subject is None:
        return ANONYMOUS in subjects
    return subject in subjects or EVERY_SUBJECT in subjects


def _rule(entry: object, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise ConfigError(f"--access-policy {where}: a mapping of subjects, repositories, actions")
    keys = set(entry)
    if keys != _RULE_KEYS:
        missing, unknown = sorted(_RULE_KEYS - keys), sorted(keys - _RULE_KEYS)
        said = [f"missing {missing}"] * bool(missing) + [f"unknown {unknown}"] * bool(unknown)
        raise ConfigError(f"--access-policy {where}: {', '.join(said)}")
    subjects = _strings(entry["subjects"], "subjects", where)
    patterns = _strings(entry["repositories"], "repositories", where)
    for pattern in patterns:
        if not _PATTERN.fullmatch(pattern) or "***" in pattern:
            raise ConfigError(
                f"--access-policy {where}: {pattern!r} is not a repository pattern "
                "(a lower-case repository name with * or ** in its components)"
            )
    actions = _strings(entry["actions"], "actions", where)
    wrong = sorted(set(actions) - set(ACTIONS))
    if wrong:
        raise ConfigError(f"--access-policy {where}: unknown actions {wrong}: {list(ACTIONS)}")
    return Rule(
        frozenset(subjects),
        frozenset(a for a in ACTIONS if a in actions),
        re.compile("|".join(_regex(p) for p in patterns)),
    )


def _strings(value: object, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"--access-policy {where}: `{key}` must be a non-empty list of names")
    return list(value)


def _regex(pattern: str) -> str:
    """`**` as a whole component: any components; `*`: any characters but `/`."""
    parts = []
    for component in pattern.split("/"):
        if component == "**":
            parts.append("(?:[^/]+(?:/[^/]+)*)")
        else:
            parts.append("[^/]*".join(re.escape(piece) for piece in component.split("*")))
    return "(?:" + "/".join(parts) + ")"
