"""The one exception type for mistakes a user can fix by changing a config, path or file.

`hh_jax.main` prints its message as a single line and exits; everything else is a bug and
keeps its traceback.
"""


class UserError(ValueError):
  """A message that says what to change; raised before anything compiles."""
