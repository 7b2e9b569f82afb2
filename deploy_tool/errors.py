"""The one error type of deploykit's core: what went wrong, and how to fix it."""

from __future__ import annotations


class DeployError(Exception):
    """A failure the user can act on. The CLI prints it as two lines and exits with `exit_code`."""

    exit_code = 2  # 3: a GateStopped

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class GateStopped(DeployError):
    """Exit 3: a measurement judged the fleet slower, not a fault or a refusal (those exit 2). Its outcomes: a canary
    rollout stopped by a batch's gate (canary.CanaryStopped) and a regression against a baseline found by `deploy
    bench --compare` (benchcompare.BenchRegressed)."""

    exit_code = 3
