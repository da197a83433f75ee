"""Errors the use-cases raise: the caller's mistakes, each with a stable code and a field path."""

from app.billing.money import Problem

__all__ = ["AccessDenied", "DomainError", "FlowTooLarge", "Problem", "not_found"]


class DomainError(Exception):
    """The use-case refused: nothing was written. Carries every problem found."""

    def __init__(self, *problems: Problem) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems

    @classmethod
    def of(cls, code: str, message: str, *path: str) -> "DomainError":
        return cls(Problem(tuple(path), code, message))

    @property
    def code(self) -> str:
        return self.problems[0].code


def not_found(what: str, *path: str) -> DomainError:
    """Whatever a key may not see does not exist for it: the same answer as a missing row."""
    return DomainError.of("NOT_FOUND", f"{what} not found", *path)


class FlowTooLarge(DomainError):
    """FLOW_OVERFLOW: a period's waterfall or books would hold an amount beyond what they can.
    `culprit` is what to end, as (type, row id), for the message to name by its global id: the
    agreement whose leg took it there, else the service or the party whose sum alone does."""

    def __init__(self, culprit: tuple[str, int], message: str, *path: str) -> None:
        super().__init__(Problem(tuple(path), "FLOW_OVERFLOW", message))
        self.culprit = culprit


class AccessDenied(Exception):
    """The caller's role may not do this at all (a top-level FORBIDDEN, not a payload error)."""
