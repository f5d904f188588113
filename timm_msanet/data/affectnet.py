"""AffectNet: the legacy CSV release (training.csv, validation.csv) or the .npy annotation folders -> train/validation;
8 None, 9 Uncertain, 10 No-Face dropped, contempt only with 8 classes."""
from __future__ import annotations

import os
from typing import Dict, Iterator, Optional, Sequence, Union

import numpy as np

from ..labels import labels_for
from .records import (DatasetLayoutError, Entry, ExportPlan, Record, Skip, parse_box_number, parse_uint,
                      require_dir, require_file, count_lines, flat_name, read_csv, safe_parts)





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
    value = parse_uint(fields[columns['expression']])
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
        numbers = [parse_box_number(fields[columns[c]]) for c in ('face_x', 'face_y', 'face_width', 'face_height')]
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
        parsed = parse_uint(text)
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
    require_dir(source, what)
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
            require_file(path, what)
        image_root = os.path.abspath(images_dir) if images_dir else os.path.join(source, AFFECTNET_IMAGES_DIR)
        require_dir(image_root, what)
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
                require_dir(os.path.join(source, set_dir, sub), what)
        return ExportPlan(
            dataset='affectnet', layout='affectnet-npy', classes=names, splits=('train', 'validation'),
            evaluation_split='validation', entries=_affectnet_npy_entries(source, names), inputs=(source,),
            label_map=label_map, split_map={f'{k}/': v for k, v in AFFECTNET_NPY_SPLITS.items()},
            rules=common_rules + ('labels read from {idx}_exp.npy; the image is images/{idx}.jpg',))
    raise DatasetLayoutError(
        f'{what}: expected {csv_dir} (legacy CSV release, with {AFFECTNET_IMAGES_DIR}/) or '
        f'{os.path.join(source, "train_set")} and {os.path.join(source, "val_set")} (images/ + annotations/ release)')
