"""The one exception type that kdlib raises for bad input."""


class KDConfigError(ValueError):
    """Bad input: names the field, the value given and what is allowed.

    In a notebook (IPython, papermill) it shows as its one line, not a traceback: the message is the whole story.
    """

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not valid: {allowed}")

    def _render_traceback_(self) -> list[str]:
        """IPython's hook for an exception's own traceback: one line, ``KDConfigError: <field>=<value> ...``."""
        return [f"{type(self).__name__}: {self}"]
