"""The one exception type that stages turn into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Something the user can fix: bad params, a missing or corrupt file, an unreachable source."""
