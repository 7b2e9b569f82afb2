"""The one error type of deploykit's core: what went wrong, and how to fix it."""

from __future__ import annotations


class DeployError(Exception):
    """A failure the user can act on. The CLI prints it as two lines and exits with `exit_code`."""

    exit_code = 2  # 3: a canary rollout stopped by its gate (deploy_tool/canary.py), a regression found by
    # `deploy bench --compare` (deploy_tool/benchcompare.py)

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message
