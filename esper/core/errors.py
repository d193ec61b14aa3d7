"""Typed errors of the pure core. Core functions raise these on contract violations; they never log."""


class LifecycleError(Exception):
    """A lifecycle contract was violated (bad state, wrong epoch, impossible stage)."""


class IllegalTransition(LifecycleError):
    """A stage change that is not one of the edges E1–E12."""

    def __init__(self, seed_id: str, from_stage: object, to_stage: object) -> None:
        super().__init__(f"{seed_id}: {from_stage!s} -> {to_stage!s} is not a legal edge")
        self.seed_id, self.from_stage, self.to_stage = seed_id, from_stage, to_stage


class IllegalActionError(LifecycleError):
    """A controller action the lifecycle refuses (strict mode)."""

    def __init__(self, action: object, reason: str) -> None:
        super().__init__(f"illegal action {action}: {reason}")
        self.action, self.reason = action, reason


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent."""


class UnknownBlueprintError(LookupError):
    """A blueprint name that the topology's catalogue does not hold. Never mapped to a noop."""

    def __init__(self, topology: str, name: str, available: tuple[str, ...]) -> None:
        super().__init__(
            f"unknown {topology} blueprint {name!r}; available: {', '.join(available)}"
        )
        self.topology, self.name, self.available = topology, name, available


class HostConfigError(ValueError):
    """A host's slot layout is invalid, or an enabled slot admits no blueprint."""


class HostCatalogueMismatch(LifecycleError):
    """A blueprint's built module disagrees with its catalogue entry (shape, identity, count)."""
