"""The ways `fit` stops early: a non-finite loss, a failed check in the step, a signal."""

import re
from pathlib import Path

# How an Equinox runtime error (`eqx.error_if`) shows in what `jax.jit` or
# `eqx.filter_jit` raises: its message is the first line after this.
_EQX_MESSAGE = re.compile(r"EquinoxRuntimeError: ([^\n]+)")


class StepCheckError(ValueError):
    """A check inside the compiled training step failed (an `eqx.error_if` in your loss);
    nothing was saved after the last good step.

    **Attributes:** `step` (about where it happened: the last step whose metrics were read
    before it) and `checkpoint` (the last good checkpoint's path, or `None`).
    """

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        self.step = step
        self.checkpoint = checkpoint
        where = (
            f"the last good checkpoint is {checkpoint}"
            if checkpoint is not None
            else "no checkpoint had been saved"
        )
        super().__init__(f"{message} (after step {step}; stopped without saving, {where})")

    @classmethod
    def from_runtime_error(
        cls, error: BaseException, step: int, checkpoint: Path | None
    ) -> "StepCheckError | None":
        """The `StepCheckError` an Equinox runtime error carries, or `None` for any other."""
        found = _EQX_MESSAGE.search(str(error))
        return None if found is None else cls(found.group(1).strip(), step, checkpoint)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; nothing was saved after the last good step.

    **Attributes:** `step` (the 1-based number of the optimiser step whose loss was not
    finite), `epoch` (1-based), `loss` (its value), `checkpoint` (the last good
    checkpoint's path, or `None`) and `cause` (what was found wrong in that step's batch,
    e.g. labels outside the model's classes, or `None` if the batch looked sound).
    """

    def __init__(
        self,
        step: int,
        epoch: int,
        loss: float,
        checkpoint: Path | None,
        cause: str | None = None,
    ):
        self.step = step
        self.epoch = epoch
        self.loss = loss
        self.checkpoint = checkpoint
        self.cause = cause
        where = (
            f"the last good checkpoint is {checkpoint}"
            if checkpoint is not None
            else "no checkpoint had been saved"
        )
        if cause is not None:
            # Bad data is not cured by a smaller learning rate: say what is wrong instead.
            advice = f"The batch of that step is at fault: {cause}."
        else:
            advice = (
                "Lower the learning rate or clip gradients; if it happens at the first "
                "steps, check the data (finite inputs, labels in [0, num_classes))."
            )
        super().__init__(
            f"training loss is {loss} at step {step} (epoch {epoch}); stopped without saving, "
            f"{where}. {advice}"
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by SIGINT (Ctrl-C) or SIGTERM after saving a checkpoint.

    A `KeyboardInterrupt`, so `except Exception` does not swallow it; command-line entries
    catch it, print it (the message says how to resume) and exit with status 130.

    **Attributes:** `step`, `checkpoint` (the saved path, or `None` without a `workdir`) and
    `message`.
    """

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        self.message = message
        self.step = step
        self.checkpoint = checkpoint
        super().__init__(message)

    def __str__(self) -> str:
        return self.message
