"""Time budget: which members run, and with or without mirroring. Without a budget, everything runs."""

from __future__ import annotations

from typing import Sequence

from .members import Member


class BudgetPlan:
    def __init__(self, members: Sequence[Member], budget_s: float | None):
        self.budget_s = budget_s
        self.mirroring_dropped: tuple[str, ...] = ()

    def should_run(self, member: Member) -> bool:
        return True

    def mirror_axes(self, member: Member):
        return member.mirror_axes

    def on_tile(self, member: Member, done: int, total: int) -> None:
        pass


def plan(members: Sequence[Member], budget_s: float | None) -> BudgetPlan:
    return BudgetPlan(members, budget_s)
