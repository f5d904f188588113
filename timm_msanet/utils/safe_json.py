"""JSON from files the package reads (configs, metadata, eval results, manifests), with bounds.

`loads` raises ValueError for anything that is not a reasonable JSON document: malformed text, text longer
than MAX_CHARS, or nesting deeper than MAX_DEPTH (Python's parser would otherwise end in RecursionError, which
no caller expects, on a file of 200,000 '['). Every caller already turns ValueError into its one-line error.
"""
import json
import re
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
