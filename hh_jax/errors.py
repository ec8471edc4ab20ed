"""The one exception type for mistakes a user can fix by changing a config, path or file.

`hh_jax.main` prints its message as a single line and exits; everything else is a bug and
keeps its traceback. `Preempted` is not a mistake: the run stopped on SIGTERM after saving
a checkpoint, and `hh_jax.main` exits with EX_TEMPFAIL (75) so a scheduler reruns it.
"""

EX_TEMPFAIL = 75


class UserError(ValueError):
  """A message that says what to change; raised before anything compiles."""


class Preempted(Exception):
  """SIGTERM arrived; the stage saved a checkpoint at the step it names and stopped."""
