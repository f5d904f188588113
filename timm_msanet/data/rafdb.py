"""RAF-DB basic: EmoLabel/list_patition_label.txt and Image/aligned or Image/original -> train/test."""
from __future__ import annotations

import os
from typing import Dict, Iterator, Optional


from ..labels import labels_for
from .records import (DatasetLayoutError, Entry, ExportPlan, Record, Skip, open_text, parse_uint, require_dir,
                      require_file, count_lines, safe_parts)





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
    value = parse_uint(label_text)
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
    with open_text(label_file) as f:
        for lineno, line in enumerate(f, 1):
            entry = parse_rafdb_line(line, f'{RAFDB_LABEL_FILE}:{lineno}', image_dir, images)
            if entry is not None:
                yield entry


def plan_rafdb(source: str, images: str = 'aligned', classes: int = 7) -> ExportPlan:
    what = 'not a RAF-DB basic folder'
    source = os.path.abspath(source)
    if images not in RAFDB_IMAGE_DIRS:
        raise ValueError(f'images must be one of {", ".join(RAFDB_IMAGE_DIRS)}, got {images!r}')
    require_dir(source, what)
    label_file = os.path.join(source, RAFDB_LABEL_FILE)
    require_file(label_file, what)
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
