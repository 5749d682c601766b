"""Placeholder for commands whose stage has not landed yet: they say so and exit 1."""

from propensity.errors import PropensityError


class NotYetImplemented(PropensityError):
    pass


def not_yet(command: str, issue: int) -> None:
    raise NotYetImplemented(f"`propensity {command}` is not implemented yet (issue #{issue})")
