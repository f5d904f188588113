"""Readers of the official FER dataset layouts, for `timm_msanet.export`.

Each `plan_*` function checks that SOURCE has the expected layout (raising `DatasetLayoutError` that
names the missing file or folder *before* anything is written) and returns an `ExportPlan` whose
`entries` is a lazy stream: every label line, CSV row or annotation file becomes either a `Record`
(an image to export, with its canonical label and split) or a `Skip` (why not). Nothing in a bad
file can stop an export, and every dropped entry is accounted for in the manifest.

This module only ever reads: it opens files for reading and lists folders. The per-line/row parsers
(`parse_rafdb_line`, `parse_affectnet_row`, `parse_fer2013_row`, `parse_ferplus_row`) touch no file
system at all, which is what lets the property-based tests throw arbitrary text at them.
"""
from __future__ import annotations

import csv
import math
import os
import re
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ToolError
from .labels import labels_for

SPLITS: Tuple[str, ...] = ('train', 'validation', 'test')
IMAGE_EXTENSIONS = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm', '.pgm'})

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

def _parse_uint(text: str) -> Optional[int]:
    """ASCII digits only: int() would also accept '+5', ' 5', '1_0' and non-ASCII digits."""
    text = text.strip()
    if text and text.isascii() and text.isdigit():
        return int(text)
    return None


def _parse_box_number(text: str) -> Optional[int]:
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


def _rel(path: str, root: str) -> str:
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


def _require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise DatasetLayoutError(f'{what}: expected folder {path} is missing')


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise DatasetLayoutError(f'{what}: expected file {path} is missing')


def _open_text(path: str):
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
    f = _open_text(path)
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


def _field(fields: Sequence[str], columns: Dict[str, int], name: str) -> Optional[str]:
    i = columns[name]
    return fields[i] if i < len(fields) else None


# ---------------------------------------------------------------------------------------------------
# RAF-DB basic

RAFDB_LABEL_FILE = os.path.join('EmoLabel', 'list_patition_label.txt')  # "patition" is the official spelling
RAFDB_LABELS: Dict[int, str] = {
    1: 'surprise', 2: 'fear', 3: 'disgust', 4: 'happiness', 5: 'sadness', 6: 'anger', 7: 'neutral'}
RAFDB_SPLITS: Dict[str, str] = {'train': 'train', 'test': 'test'}
RAFDB_IMAGE_DIRS: Dict[str, str] = {'aligned': 'Image/aligned', 'original': 'Image/original'}


def rafdb_image_name(name: str, images: str) -> str:
    """`train_00001.jpg` is stored as `train_00001_aligned.jpg` in Image/aligned/."""
    if images == 'aligned':
        stem, ext = os.path.splitext(name)
        return f'{stem}_aligned{ext}'
    return name


def parse_rafdb_line(line: str, where: str, image_dir: str, images: str = 'aligned') -> Optional[Entry]:
    """`train_00001.jpg 5` -> Record; None for a blank line; Skip for anything else.

    The label is the last whitespace-separated token, so file names containing spaces still parse.
    """
    text = line.strip()
    if not text:
        return None
    pieces = text.rsplit(None, 1)
    if len(pieces) != 2:
        return Skip(where, 'malformed_entry', f'expected "<image name> <label 1-7>", got {text[:80]!r}')
    name, label_text = pieces
    prefix = name.split('_', 1)[0]
    split = RAFDB_SPLITS.get(prefix) if '_' in name else None
    value = _parse_uint(label_text)
    if value is None:
        return Skip(where, 'malformed_entry', f'label {label_text[:20]!r} is not an integer', split)
    if value not in RAFDB_LABELS:
        return Skip(where, 'unknown_label', f'label {value} of {name[:80]!r} is not in 1..7', split)
    if split is None:
        return Skip(where, 'unknown_split', f'{name[:80]!r} starts with neither train_ nor test_')
    parts = safe_parts(name)
    if parts is None or len(parts) != 1:
        return Skip(where, 'unsafe_path', f'{name[:80]!r} is not a plain file name', split)
    file_name = rafdb_image_name(name, images)
    return Record(split, RAFDB_LABELS[value], file_name, f'{RAFDB_IMAGE_DIRS[images]}/{file_name}',
                  os.path.join(image_dir, file_name))


def _rafdb_entries(label_file: str, image_dir: str, images: str) -> Iterator[Entry]:
    with _open_text(label_file) as f:
        for lineno, line in enumerate(f, 1):
            entry = parse_rafdb_line(line, f'{RAFDB_LABEL_FILE}:{lineno}', image_dir, images)
            if entry is not None:
                yield entry


def plan_rafdb(source: str, images: str = 'aligned', classes: int = 7) -> ExportPlan:
    what = 'not a RAF-DB basic folder'
    source = os.path.abspath(source)
    if images not in RAFDB_IMAGE_DIRS:
        raise ValueError(f'images must be one of {", ".join(RAFDB_IMAGE_DIRS)}, got {images!r}')
    _require_dir(source, what)
    label_file = os.path.join(source, RAFDB_LABEL_FILE)
    _require_file(label_file, what)
    image_dir = os.path.join(source, RAFDB_IMAGE_DIRS[images])
    if not os.path.isdir(image_dir):
        other = 'original' if images == 'aligned' else 'aligned'
        hint = (f' ({os.path.join(source, RAFDB_IMAGE_DIRS[other])} exists: use --images {other})'
                if os.path.isdir(os.path.join(source, RAFDB_IMAGE_DIRS[other])) else '')
        raise DatasetLayoutError(f'{what}: expected folder {image_dir} is missing{hint}')
    return ExportPlan(
        dataset='rafdb', layout=f'rafdb-basic-{images}', classes=labels_for(classes),
        splits=('train', 'test'), evaluation_split='test',
        entries=_rafdb_entries(label_file, image_dir, images), inputs=(source,),
        label_map={str(k): v for k, v in sorted(RAFDB_LABELS.items())},
        split_map={'train_*': 'train', 'test_*': 'test'},
        rules=('RAF-DB labels 1..7 = surprise, fear, disgust, happiness, sadness, anger, neutral',
               'split from the file name prefix: train_* -> train, test_* -> test (RAF-DB has no validation split)',
               f'images from {RAFDB_IMAGE_DIRS[images]}/'),
        count_hint=lambda: count_lines(label_file))


# ---------------------------------------------------------------------------------------------------
# AffectNet

AFFECTNET_LABELS: Dict[int, str] = {
    0: 'neutral', 1: 'happiness', 2: 'sadness', 3: 'surprise', 4: 'fear', 5: 'disgust', 6: 'anger', 7: 'contempt'}
AFFECTNET_DROPPED: Dict[int, str] = {8: 'None', 9: 'Uncertain', 10: 'No-Face'}
AFFECTNET_CSV_DIR = 'Manually_Annotated_file_lists'
AFFECTNET_IMAGES_DIR = 'Manually_Annotated_Images'
AFFECTNET_CSV_SPLITS: Dict[str, str] = {'training.csv': 'train', 'validation.csv': 'validation'}
AFFECTNET_NPY_SPLITS: Dict[str, str] = {'train_set': 'train', 'val_set': 'validation'}
AFFECTNET_COLUMNS = ('subDirectory_filePath', 'face_x', 'face_y', 'face_width', 'face_height', 'expression')


def affectnet_label(value: int, classes: Sequence[str], split: Optional[str], where: str) -> Union[str, Skip]:
    """Canonical class for an AffectNet expression code, or the Skip that says why there is none."""
    if value in AFFECTNET_DROPPED:
        return Skip(where, 'excluded_label', f'expression {value} ({AFFECTNET_DROPPED[value]})', split)
    label = AFFECTNET_LABELS.get(value)
    if label is None:
        return Skip(where, 'unknown_label', f'expression {value} is not in 0..10', split)
    if label not in classes:
        return Skip(where, 'excluded_label', f'expression {value} ({label}) is not one of the {len(classes)} classes',
                    split)
    return label


def parse_affectnet_row(fields: Optional[Sequence[str]], columns: Dict[str, int], where: str, image_root: str,
                        split: str, classes: Sequence[str], crop_face: bool = False) -> Entry:
    """A legacy AffectNet CSV row -> Record or Skip. The face box is parsed only when it will be used."""
    if fields is None or len(fields) <= max(columns.values()):
        return Skip(where, 'malformed_entry', 'row has fewer columns than the header', split)
    rel = fields[columns['subDirectory_filePath']].strip()
    value = _parse_uint(fields[columns['expression']])
    if value is None:
        text = fields[columns['expression']][:20]
        return Skip(where, 'malformed_entry', f'expression {text!r} is not an integer', split)
    label = affectnet_label(value, classes, split, where)
    if isinstance(label, Skip):
        return label
    parts = safe_parts(rel)
    if parts is None:
        return Skip(where, 'unsafe_path', f'{rel[:80]!r} is not a path inside {AFFECTNET_IMAGES_DIR}/', split)
    box = None
    if crop_face:
        numbers = [_parse_box_number(fields[columns[c]]) for c in ('face_x', 'face_y', 'face_width', 'face_height')]
        if any(n is None for n in numbers) or numbers[2] <= 0 or numbers[3] <= 0:  # type: ignore[operator]
            return Skip(where, 'bad_face_box', f'face box {numbers} is not a positive rectangle', split)
        box = tuple(numbers)  # type: ignore[assignment]
    return Record(split, label, flat_name(parts), f'{AFFECTNET_IMAGES_DIR}/{"/".join(parts)}',
                  os.path.join(image_root, *parts), box=box)


def _affectnet_csv_entries(csv_paths: Dict[str, str], image_root: str, classes: Sequence[str],
                           crop_face: bool) -> Iterator[Entry]:
    for file_name, path in csv_paths.items():
        split = AFFECTNET_CSV_SPLITS[file_name]
        columns, rows = read_csv(path, AFFECTNET_COLUMNS, 'not an AffectNet CSV')
        try:
            for row in rows:
                where = f'{AFFECTNET_CSV_DIR}/{file_name}:{row.line}'
                yield parse_affectnet_row(row.fields, columns, where, image_root, split, classes, crop_face)
        finally:
            rows.close()


def read_npy_label(path: str) -> int:
    """The expression code in a new-release `{idx}_exp.npy` (a 0-d array holding '3' or 3).

    allow_pickle=False: an annotation file is data and must never be able to run code.
    """
    value = np.load(path, allow_pickle=False)
    if value.size != 1:
        raise ValueError(f'holds {value.size} values, expected one')
    scalar = value.reshape(()).item()
    if isinstance(scalar, (bytes, str)):
        text = scalar.decode('ascii', 'replace') if isinstance(scalar, bytes) else scalar
        parsed = _parse_uint(text)
        if parsed is None:
            raise ValueError(f'holds {text[:20]!r}, expected an integer')
        return parsed
    if isinstance(scalar, bool) or not isinstance(scalar, (int, float)) or float(scalar) != int(scalar):
        raise ValueError(f'holds {scalar!r}, expected an integer')
    return int(scalar)


def _affectnet_npy_entries(source: str, classes: Sequence[str]) -> Iterator[Entry]:
    # Driven by the annotation files: an image without `_exp.npy` has no label to export.
    for set_dir, split in AFFECTNET_NPY_SPLITS.items():
        ann_dir = os.path.join(source, set_dir, 'annotations')
        img_dir = os.path.join(source, set_dir, 'images')
        with os.scandir(ann_dir) as it:
            for e in it:
                if not e.name.endswith('_exp.npy'):
                    continue
                idx = e.name[:-len('_exp.npy')]
                where = f'{set_dir}/annotations/{e.name}'
                try:
                    value = read_npy_label(e.path)
                except Exception as ex:  # any unreadable annotation is one skipped entry, never a crash
                    yield Skip(where, 'malformed_entry', f'{type(ex).__name__}: {ex}'[:200], split)
                    continue
                label = affectnet_label(value, classes, split, where)
                if isinstance(label, Skip):
                    yield label
                    continue
                if not idx:
                    yield Skip(where, 'malformed_entry', 'annotation file has no image index', split)
                    continue
                name = f'{idx}.jpg'
                yield Record(split, label, name, f'{set_dir}/images/{name}', os.path.join(img_dir, name))


def _affectnet_label_map(classes: Sequence[str]) -> Dict[str, Optional[str]]:
    mapping: Dict[str, Optional[str]] = {str(k): (v if v in classes else None) for k, v in AFFECTNET_LABELS.items()}
    mapping.update({str(k): None for k in AFFECTNET_DROPPED})
    return mapping


def plan_affectnet(source: str, classes: int = 7, crop_face: bool = False,
                   images_dir: Optional[str] = None) -> ExportPlan:
    """Legacy CSV release if `Manually_Annotated_file_lists/` exists, else the train_set/val_set release."""
    what = 'not an AffectNet folder'
    source = os.path.abspath(source)
    _require_dir(source, what)
    names = labels_for(classes)
    common_rules = (
        'AffectNet expression 0..7 = neutral, happiness, sadness, surprise, fear, disgust, anger, contempt',
        '8 None, 9 Uncertain, 10 No-Face are always dropped (skipped as excluded_label)',
        '--classes 7 also drops 7 contempt; --classes 8 keeps it',
        'the official validation set (500 per class) is the usual AffectNet test set; it is written once, '
        'as validation/, with no test/ copy',
    )
    label_map = _affectnet_label_map(names)
    csv_dir = os.path.join(source, AFFECTNET_CSV_DIR)
    if os.path.isdir(csv_dir):
        csv_paths = {n: os.path.join(csv_dir, n) for n in AFFECTNET_CSV_SPLITS}
        for path in csv_paths.values():
            _require_file(path, what)
        image_root = os.path.abspath(images_dir) if images_dir else os.path.join(source, AFFECTNET_IMAGES_DIR)
        _require_dir(image_root, what)
        for path in csv_paths.values():  # header errors now, before OUTPUT is touched
            read_csv(path, AFFECTNET_COLUMNS, 'not an AffectNet CSV')[1].close()
        return ExportPlan(
            dataset='affectnet', layout='affectnet-legacy-csv', classes=names, splits=('train', 'validation'),
            evaluation_split='validation',
            entries=_affectnet_csv_entries(csv_paths, image_root, names, crop_face),
            inputs=tuple(dict.fromkeys((source, image_root))), label_map=label_map,
            split_map={f'{AFFECTNET_CSV_DIR}/{k}': v for k, v in AFFECTNET_CSV_SPLITS.items()},
            rules=common_rules + (('images cropped to the face_x, face_y, face_width, face_height box (clamped to '
                                   'the image)',) if crop_face else ('images used as they are (no face box crop)',)),
            count_hint=lambda: sum(count_lines(p) - 1 for p in csv_paths.values()))
    if any(os.path.isdir(os.path.join(source, d)) for d in AFFECTNET_NPY_SPLITS):
        if crop_face:
            raise DatasetLayoutError('--crop-face needs the legacy CSV release: the train_set/val_set release has no '
                                     'face boxes (its images are already cropped faces)')
        if images_dir:
            raise DatasetLayoutError('--images-dir applies to the legacy CSV release only')
        for set_dir in AFFECTNET_NPY_SPLITS:
            for sub in ('images', 'annotations'):
                _require_dir(os.path.join(source, set_dir, sub), what)
        return ExportPlan(
            dataset='affectnet', layout='affectnet-npy', classes=names, splits=('train', 'validation'),
            evaluation_split='validation', entries=_affectnet_npy_entries(source, names), inputs=(source,),
            label_map=label_map, split_map={f'{k}/': v for k, v in AFFECTNET_NPY_SPLITS.items()},
            rules=common_rules + ('labels read from {idx}_exp.npy; the image is images/{idx}.jpg',))
    raise DatasetLayoutError(
        f'{what}: expected {csv_dir} (legacy CSV release, with {AFFECTNET_IMAGES_DIR}/) or '
        f'{os.path.join(source, "train_set")} and {os.path.join(source, "val_set")} (images/ + annotations/ release)')


# ---------------------------------------------------------------------------------------------------
# FER2013

FER2013_LABELS: Dict[int, str] = {
    0: 'anger', 1: 'disgust', 2: 'fear', 3: 'happiness', 4: 'sadness', 5: 'surprise', 6: 'neutral'}
FER2013_USAGE: Dict[str, str] = {'Training': 'train', 'PublicTest': 'validation', 'PrivateTest': 'test'}
FER2013_FOLDER_LABELS: Dict[str, str] = {
    'angry': 'anger', 'disgust': 'disgust', 'fear': 'fear', 'happy': 'happiness', 'neutral': 'neutral',
    'sad': 'sadness', 'surprise': 'surprise'}
# Folder redistributions come in two shapes: train/ + test/ (PublicTest and PrivateTest merged into test/)
# and train/ + validation/ + test/ (validation/ = PublicTest, test/ = PrivateTest: the official split).
# (`val/` and `valid/` are other redistributions' names for validation/.)
FER2013_FOLDER_SPLITS: Dict[str, str] = {'train': 'train', 'validation': 'validation', 'val': 'validation',
                                         'valid': 'validation', 'test': 'test'}
FER2013_COLUMNS = ('emotion', 'pixels', 'Usage')
FER2013_PIXELS = 48 * 48


def fer2013_name(index: int) -> str:
    """Row i of fer2013.csv is FERPlus's `fer{i:07d}.png`: one name for the same image in both exports."""
    return f'fer{index:07d}.png'


def parse_fer2013_row(fields: Optional[Sequence[str]], columns: Dict[str, int], index: int, where: str) -> Entry:
    """A fer2013.csv row -> Record carrying its pixel string (decoded later, in a worker) or Skip."""
    if fields is None or len(fields) <= max(columns.values()):
        return Skip(where, 'malformed_entry', 'row has fewer columns than the header')
    usage = fields[columns['Usage']].strip()
    split = FER2013_USAGE.get(usage)
    value = _parse_uint(fields[columns['emotion']])
    if value is None:
        return Skip(where, 'malformed_entry', f'emotion {fields[columns["emotion"]][:20]!r} is not an integer', split)
    if value not in FER2013_LABELS:
        return Skip(where, 'unknown_label', f'emotion {value} is not in 0..6', split)
    if split is None:
        return Skip(where, 'unknown_split', f'Usage {usage[:30]!r} is not Training, PublicTest or PrivateTest')
    pixels = fields[columns['pixels']]
    if len(pixels.split()) != FER2013_PIXELS:
        return Skip(where, 'bad_pixels', f'{len(pixels.split())} pixel values, expected {FER2013_PIXELS}', split)
    return Record(split, FER2013_LABELS[value], fer2013_name(index), where, pixels=pixels)


def _fer2013_csv_entries(path: str) -> Iterator[Entry]:
    columns, rows = read_csv(path, FER2013_COLUMNS, 'not a FER2013 CSV')
    base = os.path.basename(path)
    try:
        for row in rows:
            yield parse_fer2013_row(row.fields, columns, row.index, f'{base}:{row.line}')
    finally:
        rows.close()


def _walk_files(top: str) -> Iterator[str]:
    """Files under `top`, sorted, not following folder symlinks (a link loop must not hang the export)."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            yield os.path.join(dirpath, name)


def _fer2013_folder_entries(source: str, split_dirs: Sequence[str]) -> Iterator[Entry]:
    for split_dir in split_dirs:
        split = FER2013_FOLDER_SPLITS[split_dir]
        top = os.path.join(source, split_dir)
        for path in _walk_files(top):
            rel = _rel(path, source)
            parts = _rel(path, top).split(os.sep)
            if os.path.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
                yield Skip(rel, 'not_an_image', '', split)
                continue
            # Angry/, HAPPY/: some redistributions capitalise the class folders
            label = FER2013_FOLDER_LABELS.get(parts[0].lower()) if len(parts) > 1 else None
            if label is None:
                detail = (f'class folder {parts[0]!r} is not one of {", ".join(FER2013_FOLDER_LABELS)}'
                          if len(parts) > 1 else 'image is not inside a class folder')
                yield Skip(rel, 'unknown_label', detail, split)
                continue
            yield Record(split, label, flat_name(parts[1:]), rel, path)


def plan_fer2013(source: str, classes: int = 7) -> ExportPlan:
    """`fer2013.csv` (SOURCE itself or SOURCE/fer2013.csv) or an image-folder redistribution: train/ + test/, or
    train/ + validation/ (PublicTest) + test/ (PrivateTest)."""
    what = 'not a FER2013 source'
    source = os.path.abspath(source)
    names = labels_for(classes)
    csv_path = source if os.path.isfile(source) else os.path.join(source, 'fer2013.csv')
    if os.path.isfile(csv_path):
        read_csv(csv_path, FER2013_COLUMNS, 'not a FER2013 CSV')[1].close()
        return ExportPlan(
            dataset='fer2013', layout='fer2013-csv', classes=names, splits=('train', 'validation', 'test'),
            evaluation_split='test', entries=_fer2013_csv_entries(csv_path), inputs=(csv_path,),
            label_map={str(k): v for k, v in FER2013_LABELS.items()}, split_map=dict(FER2013_USAGE),
            rules=('FER2013 emotion 0..6 = anger, disgust, fear, happiness, sadness, surprise, neutral',
                   'Usage Training -> train, PublicTest -> validation, PrivateTest -> test',
                   'pixels are 48x48 grey values, always encoded as PNG; row i is named fer{i:07d}.png as in FERPlus'),
            has_pixels=True, count_hint=lambda: count_lines(csv_path) - 1)
    split_dirs = [d for d in FER2013_FOLDER_SPLITS if os.path.isdir(os.path.join(source, d))]
    validation_dirs = [d for d in split_dirs if FER2013_FOLDER_SPLITS[d] == 'validation']
    if len(validation_dirs) > 1:
        raise DatasetLayoutError(f'{source} has {" and ".join(d + "/" for d in validation_dirs)}: both name the '
                                 f'validation split (PublicTest); keep one')
    if os.path.isdir(source) and split_dirs:
        return ExportPlan(
            dataset='fer2013', layout='fer2013-folders', classes=names,
            splits=tuple(FER2013_FOLDER_SPLITS[d] for d in split_dirs),
            evaluation_split='test', entries=_fer2013_folder_entries(source, split_dirs), inputs=(source,),
            label_map=dict(FER2013_FOLDER_LABELS), split_map={f'{d}/': FER2013_FOLDER_SPLITS[d] for d in split_dirs},
            rules=('class folders angry, disgust, fear, happy, neutral, sad, surprise -> anger, disgust, fear, '
                   'happiness, neutral, sadness, surprise',
                   f'train/ -> train, {validation_dirs[0]}/ -> validation (PublicTest), test/ -> test (PrivateTest)'
                   if validation_dirs else
                   'train/ -> train, test/ -> test (this redistribution merges PublicTest and PrivateTest into test/)'))
    raise DatasetLayoutError(
        f'{what}: expected file {csv_path} (Kaggle fer2013.csv) or folders {os.path.join(source, "train")}, '
        f'{os.path.join(source, "test")} (and optionally {os.path.join(source, "validation")}) '
        f'with angry/ disgust/ fear/ happy/ neutral/ sad/ surprise/ class folders')


# ---------------------------------------------------------------------------------------------------
# FERPlus

FERPLUS_FILE = 'fer2013new.csv'
FERPLUS_VOTES = ('neutral', 'happiness', 'surprise', 'sadness', 'anger', 'disgust', 'fear', 'contempt', 'unknown', 'NF')
FERPLUS_COLUMNS = ('Usage', 'Image name') + FERPLUS_VOTES
FERPLUS_IMAGE_DIRS: Dict[str, str] = {
    'Training': 'FER2013Train', 'PublicTest': 'FER2013Valid', 'PrivateTest': 'FER2013Test'}
FERPLUS_RULE = ('FERPlus label = the column with strictly the most votes among all 10 columns; dropped: ties for the '
                'most votes (vote_tie), unknown or NF winning (vote_unknown, vote_not_face), rows without votes '
                '(no_votes), rows without an image name (no_image), and contempt winning with --classes 7 '
                '(excluded_label)')
_FER_NAME = re.compile(r'fer(\d+)\.png')


def ferplus_majority(votes: Sequence[int]) -> Tuple[Optional[str], str]:
    """(label, '') for a clear plurality winner, else (None, skip reason). See FERPLUS_RULE."""
    top = max(votes)
    if top <= 0:
        return None, 'no_votes'
    winners = [name for name, v in zip(FERPLUS_VOTES, votes) if v == top]
    if len(winners) > 1:
        return None, 'vote_tie'
    if winners[0] == 'unknown':
        return None, 'vote_unknown'
    if winners[0] == 'NF':
        return None, 'vote_not_face'
    return winners[0], ''


class FerplusImages(NamedTuple):
    """Where FERPlus image pixels come from: a folder tree or fer2013.csv rows (exactly one is set)."""
    folder: Optional[str] = None
    fer2013_csv: Optional[str] = None


def parse_ferplus_row(fields: Optional[Sequence[str]], columns: Dict[str, int], where: str,
                      classes: Sequence[str], image_folder: Optional[str]) -> Entry:
    """A fer2013new.csv row -> Record or Skip. With `image_folder` None, `path` is left for the caller
    to fill with fer2013.csv pixels (the name then must be ferNNNNNNN.png)."""
    if fields is None or len(fields) <= max(columns.values()):
        return Skip(where, 'malformed_entry', 'row has fewer columns than the header')
    usage = fields[columns['Usage']].strip()
    split = FER2013_USAGE.get(usage)
    votes = [_parse_uint(fields[columns[c]]) for c in FERPLUS_VOTES]
    if any(v is None for v in votes):
        return Skip(where, 'malformed_entry', 'vote counts must be non-negative integers', split)
    if split is None:
        return Skip(where, 'unknown_split', f'Usage {usage[:30]!r} is not Training, PublicTest or PrivateTest')
    name = fields[columns['Image name']].strip()
    if not name:
        return Skip(where, 'no_image', '', split)
    label, reason = ferplus_majority(votes)  # type: ignore[arg-type]
    if label is None:
        return Skip(where, reason, f'votes {dict(zip(FERPLUS_VOTES, votes))}', split)
    if label not in classes:
        return Skip(where, 'excluded_label', f'{label} is not one of the {len(classes)} classes', split)
    parts = safe_parts(name)
    if parts is None or len(parts) != 1:
        return Skip(where, 'unsafe_path', f'{name[:80]!r} is not a plain file name', split)
    if image_folder is None:
        return Record(split, label, name, where)
    rel = f'{FERPLUS_IMAGE_DIRS[usage]}/{name}'
    return Record(split, label, name, rel, os.path.join(image_folder, FERPLUS_IMAGE_DIRS[usage], name))


class Fer2013Pixels:
    """fer2013.csv pixel strings by row index, reading the file once when asked in increasing order.

    FERPlus rows follow fer2013.csv's order, so a single forward pass serves them with one row in
    memory; an out-of-order request re-reads from the start (correct, only slower).
    """

    def __init__(self, path: str):
        self.path = path
        self._rows: Optional[CsvRows] = None
        self._next = 0
        self._restart()

    def _restart(self) -> None:
        self.close()
        self._columns, self._rows = read_csv(self.path, ('pixels',), 'not a FER2013 CSV')
        self._next = 0
        self._exhausted = False

    def get(self, index: int) -> Optional[str]:
        if index < self._next:
            self._restart()
        while not self._exhausted:
            row = next(self._rows, None)  # type: ignore[call-overload]
            if row is None:
                self._exhausted = True
                break
            self._next = row.index + 1
            if row.index == index:
                return _field(row.fields, self._columns, 'pixels') if row.fields is not None else None
        return None

    def close(self) -> None:
        if self._rows is not None:
            self._rows.close()


def _ferplus_entries(ferplus_csv: str, classes: Sequence[str], images: FerplusImages) -> Iterator[Entry]:
    columns, rows = read_csv(ferplus_csv, FERPLUS_COLUMNS, 'not a FERPlus CSV')
    pixels = Fer2013Pixels(images.fer2013_csv) if images.fer2013_csv else None
    try:
        for row in rows:
            entry = parse_ferplus_row(row.fields, columns, f'{FERPLUS_FILE}:{row.line}', classes, images.folder)
            if pixels is not None and isinstance(entry, Record):
                match = _FER_NAME.fullmatch(entry.name)
                values = pixels.get(int(match.group(1))) if match else None
                if values is None:
                    why = (f'fer2013.csv has no row {int(match.group(1))}' if match
                           else f'{entry.name!r} does not follow ferNNNNNNN.png, so it names no fer2013.csv row')
                    entry = Skip(entry.item, 'missing_image', why, entry.split)
                else:
                    entry = entry._replace(pixels=values)
            yield entry
    finally:
        rows.close()
        if pixels is not None:
            pixels.close()


def plan_ferplus(source: str, classes: int = 7, fer2013_csv: Optional[str] = None,
                 images_dir: Optional[str] = None) -> ExportPlan:
    """fer2013new.csv (SOURCE itself or SOURCE/fer2013new.csv) + images from fer2013.csv or FER2013Train/ folders.

    Without options the images are looked up next to fer2013new.csv: fer2013.csv first, else the
    FER2013Train/ FER2013Valid/ FER2013Test/ folders.
    """
    what = 'not a FERPlus source'
    source = os.path.abspath(source)
    if fer2013_csv and images_dir:
        raise DatasetLayoutError('give either --fer2013-csv or --images-dir, not both')
    ferplus_csv = source if os.path.isfile(source) else os.path.join(source, FERPLUS_FILE)
    _require_file(ferplus_csv, what)
    base = os.path.dirname(ferplus_csv)
    if not fer2013_csv and not images_dir:
        if os.path.isfile(os.path.join(base, 'fer2013.csv')):
            fer2013_csv = os.path.join(base, 'fer2013.csv')
        elif any(os.path.isdir(os.path.join(base, d)) for d in FERPLUS_IMAGE_DIRS.values()):
            images_dir = base
        else:
            raise DatasetLayoutError(
                f'{what}: expected FER2013 images: {os.path.join(base, "fer2013.csv")} or folders '
                f'{", ".join(os.path.join(base, d) for d in FERPLUS_IMAGE_DIRS.values())} '
                f'(or name them with --fer2013-csv / --images-dir)')
    if fer2013_csv:
        fer2013_csv = os.path.abspath(fer2013_csv)
        _require_file(fer2013_csv, what)
        read_csv(fer2013_csv, ('pixels',), 'not a FER2013 CSV')[1].close()
        images = FerplusImages(fer2013_csv=fer2013_csv)
    else:
        images_dir = os.path.abspath(images_dir)  # type: ignore[arg-type]
        _require_dir(images_dir, what)
        if not any(os.path.isdir(os.path.join(images_dir, d)) for d in FERPLUS_IMAGE_DIRS.values()):
            raise DatasetLayoutError(
                f'{what}: expected folders {", ".join(FERPLUS_IMAGE_DIRS.values())} in {images_dir}')
        images = FerplusImages(folder=images_dir)
    read_csv(ferplus_csv, FERPLUS_COLUMNS, 'not a FERPlus CSV')[1].close()
    names = labels_for(classes)
    label_map: Dict[str, Optional[str]] = {c: (c if c in names else None) for c in FERPLUS_VOTES}
    inputs = (base if os.path.isdir(source) else ferplus_csv, images.fer2013_csv or images.folder)
    return ExportPlan(
        dataset='ferplus', layout='ferplus-' + ('fer2013-csv' if images.fer2013_csv else 'folders'), classes=names,
        splits=('train', 'validation', 'test'), evaluation_split='test',
        entries=_ferplus_entries(ferplus_csv, names, images), inputs=tuple(dict.fromkeys(inputs)),  # type: ignore
        label_map=label_map, split_map=dict(FER2013_USAGE),
        rules=(FERPLUS_RULE, 'Usage Training -> train, PublicTest -> validation, PrivateTest -> test',
               ('pixels from fer2013.csv row N for image ferNNNNNNN.png, encoded as PNG' if images.fer2013_csv else
                'images from FER2013Train/, FER2013Valid/, FER2013Test/ by Usage')),
        has_pixels=bool(images.fer2013_csv), count_hint=lambda: count_lines(ferplus_csv) - 1)
