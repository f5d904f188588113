"""One way to write every output file (JSON, CSV, PNG, video, ONNX, safetensors, release folders).

The promises, each kept by `tests/utils/test_outputs.py` and by the tool tests that go through here:

* An output is never one of the command's inputs (`os.path.samefile`), even with `--overwrite`.
* An output is never written through a symbolic link at its own path, and never onto something that is
  not a regular file (a folder, a FIFO, a device such as /dev/full).
* An existing file is replaced only when the command was given `--overwrite`.
* The bytes go to a temporary file beside the destination, are flushed to disk, and the temporary file then
  takes the destination's name in one step: a failure or an interrupt leaves the old file (or nothing), never
  a truncated one. Without `--overwrite` that last step is a hard link, which fails if another process
  created the name meanwhile: two commands writing one path never silently replace each other's file.
* Outputs get the usual permissions (0666 less the umask), not the temporary file's 0600.
* Every failure (no space, no permission, a missing folder that cannot be made) is an `OutputError` naming
  the path and the reason, which the command line prints as one line.

Folders of outputs (`eval --out DIR`, `predict --annotate DIR`) are made as needed; each file in them follows
the rules above. A release folder (`publish --dry-run DIR`) is built beside DIR and renamed into place
(`replace_folder`).
"""
import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

from .errors import ToolError

PathLike = Union[str, 'os.PathLike[str]']

_UMASK = os.umask(0)
os.umask(_UMASK)


class OutputError(ToolError):
    """An output path that would destroy user data, or that cannot be written."""


def _same_file(a: PathLike, b: PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def check_output(path: PathLike, inputs: Iterable[Optional[PathLike]] = (), overwrite: bool = False,
                 what: str = 'output') -> Path:
    """Raise OutputError when `path` may not be written (see the module docstring); returns it as a Path."""
    path = Path(path)
    for inp in inputs:
        if inp is not None and os.path.lexists(path) and _same_file(path, inp):
            same = os.path.abspath(inp) == os.path.abspath(path)
            raise OutputError(f'{what} {path} is one of the inputs{"" if same else f" ({inp})"}; choose another path')
    if path.is_symlink():
        raise OutputError(f'{what} {path} is a symbolic link; outputs are never written through links '
                          f'(remove it or choose another path)')
    if path.is_dir():
        raise OutputError(f'{what} {path} is a folder; give a file path')
    if path.exists():
        if not path.is_file():
            raise OutputError(f'{what} {path} exists and is not a regular file (a device or a pipe); '
                              f'choose a file path')
        if not overwrite:
            raise OutputError(f'{what} {path} exists; pass --overwrite to replace it')
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f'{what} {path}: {path.parent} is not a folder')
    return path


def _make_parent(path: Path, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f'cannot create the folder of {what} {path}: {_reason(e)}') from None


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _put_in_place(tmp: str, path: Path, overwrite: bool, what: str) -> None:
    if overwrite:
        if path.is_symlink():  # appeared while we wrote
            raise OutputError(f'{what} {path} became a symbolic link while it was written; not replaced')
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if the name exists: never replaces what another process just wrote
    except FileExistsError:
        raise OutputError(f'{what} {path} was created by someone else while this one was written; '
                          f'not replaced (pass --overwrite to replace it)') from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(path):  # a file system without hard links: check, then rename
            raise OutputError(f'{what} {path} was created by someone else while this one was written; '
                              f'not replaced') from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: PathLike, inputs: Iterable[Optional[PathLike]] = (), overwrite: bool = False,
                what: str = 'output') -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that pick a format by suffix pick the
    right one); when the block ends without an error, the file written there becomes `path`."""
    path = check_output(path, inputs, overwrite, what)
    _make_parent(path, what)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix=f'.partial{path.suffix}')
    except OSError as e:
        raise OutputError(f'cannot write {what} {path}: {_reason(e)}') from None
    os.close(fd)
    try:
        yield Path(tmp)
        usual_permissions(tmp)
        _fsync(tmp)
        _put_in_place(tmp, path, overwrite, what)
    except OSError as e:
        raise OutputError(f'cannot write {what} {path}: {_reason(e)}') from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_output(path: PathLike, data: Union[str, bytes], inputs: Iterable[Optional[PathLike]] = (),
                 overwrite: bool = False, what: str = 'output') -> Path:
    """Write text (UTF-8) or bytes to `path` under the rules of this module."""
    with atomic_path(path, inputs, overwrite, what) as tmp:
        # file names that are not UTF-8 arrive as lone surrogates: written as \udcXX escapes, not an error
        tmp.write_bytes(data.encode('utf-8', 'backslashreplace') if isinstance(data, str) else data)
    return Path(path)


# control characters, lone surrogates, and the bidirectional overrides / isolates / marks (U+202E would show a
# name as 'gpj.exe' reversed)
_CONTROL = re.compile(r'[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]')
_FORMULA_START = ('=', '+', '-', '@', '\t', '\r')
_NUMBER = re.compile(r'[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?')


def printable(text: Any) -> str:
    """`text` for a terminal line or a CSV cell: control characters (newlines, escape sequences) and the lone
    surrogates of undecodable file names written as escapes, so no file name can forge or colour a line."""
    return _CONTROL.sub(lambda m: m.group().encode('unicode_escape', 'backslashreplace').decode('ascii'), str(text))


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string that would start a formula (=, +, -, @; a file named
    '=HYPERLINK(...).jpg') gets a leading apostrophe; numbers, and strings that are numbers, stay as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_text(rows: Iterable[Iterable[Any]]) -> str:
    """Rows as CSV text, every cell through `csv_cell`."""
    import csv
    import io
    buf = io.StringIO(newline='')
    csv.writer(buf).writerows([csv_cell(v) for v in row] for row in rows)
    return buf.getvalue()


def check_folder_outputs(folder: PathLike, names: Iterable[str], inputs: Iterable[Optional[PathLike]] = (),
                         overwrite: bool = False, what: str = '--out',
                         input_dirs: Iterable[Optional[PathLike]] = ()) -> Path:
    """Check, before any work, that the files `names` may be written in `folder` (made later if absent), and
    that `folder` is not inside one of `input_dirs` (a data folder: files written into DATA/test would become
    images of the next evaluation)."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise OutputError(f'{what} {folder} is not a folder (a file or a link); give a folder path')
    real = os.path.realpath(folder)
    for data in filter(None, input_dirs):
        top = os.path.realpath(data)
        if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
            raise OutputError(f'{what} {folder} is inside the input folder {data}: its files would be read as '
                              f'data next time; give a folder outside it')
    inputs = list(inputs)
    for name in names:
        check_output(folder / name, inputs, overwrite, what)
    return folder


def save_figure(fig, path: PathLike, overwrite: bool = False, dpi: int = 120) -> Path:
    """A matplotlib figure as PNG under the rules of this module; the figure is closed either way."""
    import matplotlib.pyplot as plt
    try:
        with atomic_path(path, (), overwrite, 'plot') as tmp:
            fig.savefig(tmp, dpi=dpi, format='png')
    finally:
        plt.close(fig)
    return Path(path)


def usual_permissions(path: PathLike) -> None:
    """The mode a plain mkdir or open would give (0777 for folders, 0666 for files, less the umask), instead of
    mkdtemp's and mkstemp's 0700/0600: outputs others can read, as the user's umask allows."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_UMASK)


def finish_permissions(folder: PathLike) -> None:
    """`usual_permissions` for a folder built in a temporary place and everything in it (a release folder)."""
    usual_permissions(folder)
    for p in Path(folder).rglob('*'):
        if not p.is_symlink():
            usual_permissions(p)


def replace_folder(staging: PathLike, folder: PathLike, overwrite: bool, is_ours, what: str = 'output folder'
                   ) -> Path:
    """Rename a finished `staging` folder (made beside `folder`) to `folder`.

    `folder` may be absent or an empty folder; with `overwrite` it may also be a folder `is_ours(path)` says
    this tool wrote (a release folder), which is removed only after the new one is in place. Anything else
    is refused and `staging` is left for the caller to remove."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise OutputError(f'{what} {folder} exists and is not a folder; not replaced')
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise OutputError(f'{what} {folder} exists and is not empty; pass --overwrite to replace it')
        if not is_ours(folder):
            raise OutputError(f'{what} {folder} holds files this tool did not write; not replaced, even with '
                              f'--overwrite (choose an empty or new folder)')
        old = folder.with_name(f'.{folder.name}.old-{os.getpid()}')
        os.rename(folder, old)
        try:
            os.rename(staging, folder)
        except OSError:
            os.rename(old, folder)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return folder
    try:
        os.rename(staging, folder)  # onto an absent or empty folder only; a non-empty one fails
    except OSError as e:
        raise OutputError(f'cannot write {what} {folder}: {_reason(e)}') from None
    return folder


def add_overwrite_argument(parser, what: str = 'the output files') -> None:
    parser.add_argument('--overwrite', action='store_true',
                        help=f'replace {what} if they exist (never an input, a link or a folder). Missing '
                             f'folders on an output path are created, as mkdir -p does')
