"""The one exception type users see.

Every check on user-supplied input (image, spec, model folder, socket layout) raises `InputError` with a
message that names the file and the problem on one line; the command-line layers print it and exit
non-zero without writing an output file.
"""


class InputError(Exception):
    """Bad input from the user: the message is one line, names the file and says what is wrong."""

    def __init__(self, where: object, problem: str):
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")
