"""One error path for the `timm-msanet` command.

Each tool raises a `ToolError` subclass for what is wrong with the user's input or set-up (a missing
file, weights that do not fit, a dataset folder that is not the expected layout, OpenCV not installed);
its message says what was expected and what to do. `cli.main` prints it as one line,
`timm-msanet COMMAND: error: MESSAGE`, and exits with the error's `exit_status`: 2 when the input or the
options are wrong, 1 when valid input gave nothing to show (every entry skipped, every image failed).
Anything else is a bug and keeps its traceback. In Python the same exceptions reach the caller.
"""


class ToolError(RuntimeError):
    """A problem with the input or set-up of a tool, reported in one line by the CLI."""

    exit_status = 2


# timm-msanet is installed from a clone today (it is not on PyPI yet): an install hint names the packages an
# extra brings, which install from the registry now, and the extra itself as a clone installs it.
EXTRAS = {
    'faces': '"opencv-python-headless<5"',
    'landmarks': 'dlib-bin face_recognition_models',
    'onnx': 'onnx onnxruntime onnxscript',
}


def install_hint(extra: str) -> str:
    """'pip install PACKAGES (the [extra] extra: pip install "./timm-msanet[extra]" from a clone)'."""
    return f'pip install {EXTRAS[extra]} (the [{extra}] extra: pip install "./timm-msanet[{extra}]" from a clone)'
