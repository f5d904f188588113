"""FER2013 (fer2013.csv or the train/ [validation/] test/ folder redistribution) and FERPlus (fer2013new.csv
votes over the FER2013 faces: majority label, ties dropped) -> train/validation/test."""
from __future__ import annotations

import csv
import os
import re
from typing import Dict, Iterator, NamedTuple, Optional, Sequence, Tuple


from ..labels import labels_for
from .records import (CsvRows, DatasetLayoutError, open_text, Entry, ExportPlan, IMAGE_EXTENSIONS, Record, Skip,
                      csv_field, parse_uint, relative_to_root, require_dir, require_file, count_lines, flat_name, read_csv,
                      safe_parts)





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
    value = parse_uint(fields[columns['emotion']])
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


def _split_files(top: str) -> Iterator[str]:
    """Files of one split folder: its class folders are followed when they are links (a tree assembled with
    `ln -s`), anything below them is walked without following links."""
    for name in sorted(os.listdir(top)):
        path = os.path.join(top, name)
        if os.path.isdir(path):
            yield from _walk_files(path)
        elif os.path.isfile(path):
            yield path


def linked_class_folders(source: str, split_dirs: Sequence[str]) -> Tuple[str, ...]:
    """The real folders that class-folder links in SOURCE's split folders point to: part of the dataset SOURCE
    names, so the export reads inside them too (SOURCE confinement, docs/security.md)."""
    out = []
    for split_dir in split_dirs:
        top = os.path.join(source, split_dir)
        for name in sorted(os.listdir(top)):
            path = os.path.join(top, name)
            if os.path.islink(path) and os.path.isdir(path):
                out.append(os.path.realpath(path))
    return tuple(dict.fromkeys(out))


def _fer2013_folder_entries(source: str, split_dirs: Sequence[str]) -> Iterator[Entry]:
    for split_dir in split_dirs:
        split = FER2013_FOLDER_SPLITS[split_dir]
        top = os.path.join(source, split_dir)
        for path in _split_files(top):
            rel = relative_to_root(path, source)
            parts = relative_to_root(path, top).split(os.sep)
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
            evaluation_split='test', entries=_fer2013_folder_entries(source, split_dirs),
            inputs=(source,) + linked_class_folders(source, split_dirs),
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
# FERPlus's own generator (microsoft/FERPlus generate_training_data.py) writes the images to data/FER2013Train/ ...
# and beside them each split's votes as label.csv: no header, image name, face box, then the 10 vote columns in
# FERPLUS_VOTES order (the same counts as fer2013new.csv).
FERPLUS_LABEL_FILE = 'label.csv'
FERPLUS_DATA_DIR = 'data'


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
    votes = [parse_uint(fields[columns[c]]) for c in FERPLUS_VOTES]
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
                return csv_field(row.fields, self._columns, 'pixels') if row.fields is not None else None
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


def _has_split_folders(folder: str) -> bool:
    return any(os.path.isdir(os.path.join(folder, d)) for d in FERPLUS_IMAGE_DIRS.values())


def _label_csv_folder(source: str) -> Optional[str]:
    """The folder (SOURCE or SOURCE/data) whose FER2013Train/ ... hold label.csv vote files, else None."""
    for folder in (source, os.path.join(source, FERPLUS_DATA_DIR)):
        if any(os.path.isfile(os.path.join(folder, d, FERPLUS_LABEL_FILE)) for d in FERPLUS_IMAGE_DIRS.values()):
            return folder
    return None


def _label_csv_entries(images_dir: str, classes: Sequence[str]) -> Iterator[Entry]:
    """Each split folder's label.csv rows as fer2013new.csv rows of that Usage (see FERPLUS_LABEL_FILE)."""
    columns = {'Usage': 0, 'Image name': 1, **{c: 2 + i for i, c in enumerate(FERPLUS_VOTES)}}
    for usage, folder in FERPLUS_IMAGE_DIRS.items():
        path = os.path.join(images_dir, folder, FERPLUS_LABEL_FILE)
        if not os.path.isfile(path):
            continue
        f = open_text(path)
        rows = CsvRows(f, csv.reader(f))
        try:
            for row in rows:
                fields = None
                if row.fields is not None and len(row.fields) >= 2 + len(FERPLUS_VOTES):
                    fields = [usage, row.fields[0]] + row.fields[2:2 + len(FERPLUS_VOTES)]
                yield parse_ferplus_row(fields, columns, f'{folder}/{FERPLUS_LABEL_FILE}:{row.line}', classes,
                                        images_dir)
        finally:
            rows.close()


def _plan_ferplus_label_csv(images_dir: str, classes: int) -> ExportPlan:
    names = labels_for(classes)
    files = [os.path.join(images_dir, d, FERPLUS_LABEL_FILE) for d in FERPLUS_IMAGE_DIRS.values()]
    return ExportPlan(
        dataset='ferplus', layout='ferplus-label-csv', classes=names, splits=('train', 'validation', 'test'),
        evaluation_split='test', entries=_label_csv_entries(images_dir, names), inputs=(images_dir,),
        label_map={c: (c if c in names else None) for c in FERPLUS_VOTES}, split_map=dict(FER2013_USAGE),
        rules=(FERPLUS_RULE, 'FER2013Train/ -> train, FER2013Valid/ -> validation, FER2013Test/ -> test',
               'votes from each split folder\'s label.csv (image name, face box, the 10 vote columns)'),
        count_hint=lambda: sum(count_lines(f) for f in files if os.path.isfile(f)))


def _ferplus_images(fer2013_csv: Optional[str], images_dir: Optional[str], what: str) -> 'FerplusImages':
    """Where FERPlus's pixels come from: fer2013.csv rows, or the FER2013Train/Valid/Test folders."""
    if fer2013_csv:
        fer2013_csv = os.path.abspath(fer2013_csv)
        require_file(fer2013_csv, what)
        read_csv(fer2013_csv, ('pixels',), 'not a FER2013 CSV')[1].close()
        return FerplusImages(fer2013_csv=fer2013_csv)
    images_dir = os.path.abspath(images_dir)  # type: ignore[arg-type]
    require_dir(images_dir, what)
    if not any(os.path.isdir(os.path.join(images_dir, d)) for d in FERPLUS_IMAGE_DIRS.values()):
        raise DatasetLayoutError(f'{what}: expected folders {", ".join(FERPLUS_IMAGE_DIRS.values())} in {images_dir}')
    return FerplusImages(folder=images_dir)


def plan_ferplus(source: str, classes: int = 7, fer2013_csv: Optional[str] = None,
                 images_dir: Optional[str] = None) -> ExportPlan:
    """fer2013new.csv (SOURCE itself or SOURCE/fer2013new.csv) + images from fer2013.csv or FER2013Train/ folders;
    or, where no fer2013new.csv is given, the label.csv vote file of each split folder (SOURCE or SOURCE/data:
    FERPlus's own generator output).

    Without options the images are looked up next to fer2013new.csv: fer2013.csv first, else the
    FER2013Train/ FER2013Valid/ FER2013Test/ folders there or in data/ (where FERPlus's generator writes them).
    """
    what = 'not a FERPlus source'
    source = os.path.abspath(source)
    if fer2013_csv and images_dir:
        raise DatasetLayoutError('give either --fer2013-csv or --images-dir, not both')
    ferplus_csv = source if os.path.isfile(source) else os.path.join(source, FERPLUS_FILE)
    if not os.path.isfile(ferplus_csv) and os.path.isdir(source) and not fer2013_csv:
        folder = os.path.abspath(images_dir) if images_dir else _label_csv_folder(source)
        if folder and _label_csv_folder(folder) == folder:
            return _plan_ferplus_label_csv(folder, classes)
        raise DatasetLayoutError(
            f'{what}: expected file {ferplus_csv} (the FERPlus votes), or split folders with their votes: '
            f'{os.path.join(source, FERPLUS_IMAGE_DIRS["Training"], FERPLUS_LABEL_FILE)} or '
            f'{os.path.join(source, FERPLUS_DATA_DIR, FERPLUS_IMAGE_DIRS["Training"], FERPLUS_LABEL_FILE)}')
    require_file(ferplus_csv, what)
    base = os.path.dirname(ferplus_csv)
    if not fer2013_csv and not images_dir:
        if os.path.isfile(os.path.join(base, 'fer2013.csv')):
            fer2013_csv = os.path.join(base, 'fer2013.csv')
        elif _has_split_folders(base):
            images_dir = base
        elif _has_split_folders(os.path.join(base, FERPLUS_DATA_DIR)):
            images_dir = os.path.join(base, FERPLUS_DATA_DIR)
        else:
            raise DatasetLayoutError(
                f'{what}: expected FER2013 images: {os.path.join(base, "fer2013.csv")} or folders '
                f'{", ".join(os.path.join(base, d) for d in FERPLUS_IMAGE_DIRS.values())} (also looked in '
                f'{os.path.join(base, FERPLUS_DATA_DIR)}; or name them with --fer2013-csv / --images-dir)')
    images = _ferplus_images(fer2013_csv, images_dir, what)
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
