"""The one exception type that means "the user gave us something wrong".

The CLI turns it into a one-line message and exit status 2; anything else is a bug and keeps
its traceback.
"""


class DeepwmError(Exception):
  """Bad input (data, kit, config): the message says what is wrong and what to do."""
