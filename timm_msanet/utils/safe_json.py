"""JSON from files the package reads (configs, metadata, eval results, manifests), with bounds.

`loads` raises ValueError for anything that is not a reasonable JSON document: malformed text, text longer
than MAX_CHARS, or nesting deeper than MAX_DEPTH (Python's parser would otherwise end in RecursionError, which
no caller expects, on a file of 200,000 '['). `read` is the one way a JSON file is read: a regular file only
(a FIFO would block the open, /dev/zero never ends), its size checked before a byte is read and at most
MAX_CHARS + 1 bytes read. Every caller already turns ValueError into its one-line error.
"""
import json
import os
import re
import stat
from typing import Any

MAX_CHARS = 64 * 2**20
MAX_DEPTH = 64


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = re.compile(r'[^\[\]{}]+')


def _depth_ok(text: str) -> bool:
    """Whether no bracket nests deeper than MAX_DEPTH (brackets inside strings do not count); the regexes keep
    the Python loop to the brackets only."""
    depth = 0
    for ch in _NOT_BRACKETS.sub('', _STRINGS.sub('', text)):
        depth += 1 if ch in '[{' else -1
        if depth > MAX_DEPTH:
            return False
    return True


def loads(text: Any) -> Any:
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode('utf-8')
    if len(text) > MAX_CHARS:
        raise ValueError(f'{len(text):,} characters of JSON, more than the {MAX_CHARS:,} a config or record may have')
    if not _depth_ok(text):
        raise ValueError(f'JSON nested more than {MAX_DEPTH} levels deep: not a config or record this package wrote')
    return json.loads(text)


def read(path: Any) -> Any:
    """The JSON document in the file at `path`: FileNotFoundError when there is none, ValueError when it is not a
    regular file, is larger than MAX_CHARS bytes, cannot be read (a symlink loop) or is not `loads`-able JSON."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))  # a FIFO opens at once, then is refused
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f'{path} does not exist') from None
    except OSError as e:
        raise ValueError(f'cannot read {path}: {e.strerror}') from None
    with os.fdopen(fd, 'rb') as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f'{path} is not a regular file (a FIFO, device or folder): not read')
        if st.st_size > MAX_CHARS:
            raise ValueError(f'{path} has {st.st_size:,} bytes, more than the {MAX_CHARS:,} a config or record may '
                             f'have: not read')
        data = f.read(MAX_CHARS + 1)
    if len(data) > MAX_CHARS:  # grew after the check
        raise ValueError(f'{path} has more than {MAX_CHARS:,} bytes: not read')
    return loads(data)
