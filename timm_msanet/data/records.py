"""What every dataset parser yields and shares: Record, Skip, ExportPlan, the skip reasons, the layout errors,
and bounded, read-only readers of label files and CSVs that never let a path leave the dataset folder."""
from __future__ import annotations

import csv
import math
import os
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union


from ..utils.errors import ToolError



SPLITS: Tuple[str, ...] = ('train', 'validation', 'test')
# what an image-folder source (the FER2013 redistributions) may hold; all but timm's own are written as PNG
IMAGE_EXTENSIONS = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm', '.pgm',
                              '.jfif', '.jpe', '.avif', '.heic', '.heif', '.hif'})
# What timm's ImageFolder reader reads (`timm.data.readers.img_extensions` defaults); it passes over every other
# file without a word, so an image in another format is written as PNG even in link and copy mode.
TIMM_IMAGE_EXTENSIONS = frozenset({'.jpg', '.jpeg', '.png'})

# Stable skip reason keys (manifest `skipped.by_reason`) and what each means.
SKIP_REASONS: Dict[str, str] = {
    'malformed_entry': 'label line, CSV row or annotation file without the expected fields or numbers',
    'unknown_label': 'label value or class folder that is not in the dataset label map',
    'excluded_label': 'valid label dropped by rule (AffectNet None/Uncertain/No-Face; contempt with --classes 7)',
    'unknown_split': 'split name (file prefix, Usage column) that the dataset does not define',
    'unsafe_path': 'image path that is empty, absolute or climbs out of the image folder',
    'no_image': 'FERPlus row without an image name (FERPlus removed the image)',
    'vote_tie': 'FERPlus: two or more columns share the most votes',
    'vote_unknown': 'FERPlus: most votes are "unknown"',
    'vote_not_face': 'FERPlus: most votes are "NF" (not a face)',
    'no_votes': 'FERPlus: no votes at all',
    'bad_face_box': 'AffectNet face box that is not a positive rectangle inside the image',
    'bad_pixels': 'FER2013 pixels that are not 2304 integers in 0..255',
    'missing_image': 'image file (or fer2013.csv row) that does not exist',
    'outside_source': 'image path (a symbolic link) that resolves outside SOURCE: never read',
    'not_a_file': 'image path that is not a regular file (a folder, FIFO or device): never read',
    'too_large': 'image file larger than 64 MiB: never read',
    'needs_heif': 'HEIF/HEIC photo while pillow-heif is not installed (pip install "timm-msanet[heif]")',
    'not_an_image': 'file whose extension is not an image extension',
    'undecodable_image': 'image that cannot be fully decoded (corrupt or truncated)',
    'duplicate': 'second entry with the same output file name in the same class folder',
    'write_error': 'the output file could not be written',
}


class ExportError(ToolError):
    """Base of the export errors (the CLI reports them as one line, exit status 2)."""


class DatasetLayoutError(ExportError):
    """SOURCE is not the expected layout; the message names the file or folder that was expected."""


class Record(NamedTuple):
    """One image to export. A NamedTuple because records cross process boundaries by the thousand."""
    split: str
    label: str  # canonical class name
    name: str  # output file name: one safe path component
    item: str  # how the entry is named in the manifest: path relative to its input folder
    path: Optional[str] = None  # absolute source image
    pixels: Optional[str] = None  # FER2013 space-separated grey values, encoded by the exporter
    box: Optional[Tuple[int, int, int, int]] = None  # face box x, y, width, height


class Skip(NamedTuple):
    """One source entry that is not exported, with a key of `SKIP_REASONS`."""
    item: str
    reason: str
    detail: str = ''
    split: Optional[str] = None


Entry = Union[Record, Skip]


class ExportPlan(NamedTuple):
    """What a dataset reader found: enough for the generic exporter to write and document OUTPUT."""
    dataset: str
    layout: str
    classes: Tuple[str, ...]
    splits: Tuple[str, ...]
    evaluation_split: str  # the split papers report final numbers on
    entries: Iterable[Entry]
    inputs: Tuple[str, ...]  # every folder or file read; OUTPUT may not be inside any of them
    label_map: Dict[str, Optional[str]]  # source label -> canonical class (None: dropped)
    split_map: Dict[str, str]  # source split name -> output split
    rules: Tuple[str, ...]  # the dataset-specific rules applied, in words, copied into the manifest
    has_pixels: bool = False  # entries carry pixel arrays that must be encoded (CPU-bound)
    count_hint: Optional[Callable[[], int]] = None  # cheap upper bound on len(entries), for progress


# ---------------------------------------------------------------------------------------------------
# small shared helpers

def parse_uint(text: str) -> Optional[int]:
    """ASCII digits only: int() would also accept '+5', ' 5', '1_0' and non-ASCII digits."""
    text = text.strip()
    if text and text.isascii() and text.isdigit():
        return int(text)
    return None


def parse_box_number(text: str) -> Optional[int]:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(round(value)) if math.isfinite(value) and abs(value) < 1e9 else None


def safe_parts(relpath: str) -> Optional[Tuple[str, ...]]:
    """Split a dataset-relative path into components, or None when it could reach outside its folder.

    Paths come from label files and CSVs, i.e. from data; a row naming `../../etc/passwd` must not
    make the exporter link or copy files from outside the image folder.
    """
    if not relpath or '\x00' in relpath or relpath.startswith(('/', '\\')):
        return None
    parts = tuple(relpath.replace('\\', '/').split('/'))
    if any(p in ('', '.', '..') for p in parts):
        return None
    return parts


def flat_name(parts: Sequence[str]) -> str:
    """Output file name for a nested source path: class folders must stay flat for ImageFolder."""
    return '__'.join(parts)


def relative_to_root(path: str, root: str) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return path


def count_lines(path: str) -> int:
    """Newline count, read in blocks: a cheap total for the progress bar."""
    n = 0
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            n += block.count(b'\n')
    return n


def require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise DatasetLayoutError(f'{what}: expected folder {path} is missing')


def require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise DatasetLayoutError(f'{what}: expected file {path} is missing')


def open_text(path: str):
    # utf-8-sig drops a BOM; surrogateescape keeps undecodable bytes in file names round-trippable
    return open(path, 'r', encoding='utf-8-sig', errors='surrogateescape', newline='')


class CsvRow(NamedTuple):
    index: int  # 0-based data row number (the header is not a row)
    line: int  # 1-based line number in the file, for messages
    fields: Optional[List[str]]  # None when the csv module rejected the row


class CsvRows:
    """Data rows of an open CSV file; the file closes when the rows run out or on `close()`."""

    def __init__(self, file, reader):
        self._file = file
        self._reader = reader
        self._index = 0

    def __iter__(self) -> 'CsvRows':
        return self

    def __next__(self) -> CsvRow:
        while True:
            try:
                fields: Optional[List[str]] = next(self._reader)
            except StopIteration:
                self.close()
                raise
            except csv.Error:  # e.g. a field over the csv module's size limit: one bad row, not a bad file
                fields = None
            if fields != []:  # blank lines are not rows
                row = CsvRow(self._index, self._reader.line_num, fields)
                self._index += 1
                return row

    def close(self) -> None:
        self._file.close()


def read_csv(path: str, required: Sequence[str], what: str) -> Tuple[Dict[str, int], CsvRows]:
    """Check the header names the `required` columns, then stream the data rows.

    Header matching ignores case and surrounding spaces. Blank lines are not rows. A row the csv
    module rejects comes back with `fields=None` instead of aborting the whole file.
    """
    f = open_text(path)
    reader = csv.reader(f)
    try:
        header = next(reader)
    except StopIteration:
        f.close()
        raise DatasetLayoutError(f'{what}: {path} is empty; expected a header with columns {", ".join(required)}')
    except csv.Error as e:
        f.close()
        raise DatasetLayoutError(f'{what}: cannot read the header of {path} ({e})') from None
    names = [h.strip().lower() for h in header]
    missing = [c for c in required if c.lower() not in names]
    if missing:
        f.close()
        raise DatasetLayoutError(
            f'{what}: {path} has header {header[:12]!r}; expected columns {", ".join(required)} '
            f'(missing {", ".join(missing)})')
    return {c: names.index(c.lower()) for c in required}, CsvRows(f, reader)


def csv_field(fields: Sequence[str], columns: Dict[str, int], name: str) -> Optional[str]:
    i = columns[name]
    return fields[i] if i < len(fields) else None
