"""Readers of the official FER dataset layouts, for `timm_msanet.data.export`.

Each `plan_*` function checks that SOURCE has the expected layout (raising `DatasetLayoutError` that
names the missing file or folder *before* anything is written) and returns an `ExportPlan` whose
`entries` is a lazy stream: every label line, CSV row or annotation file becomes either a `Record`
(an image to export, with its canonical label and split) or a `Skip` (why not). Nothing in a bad
file can stop an export, and every dropped entry is accounted for in the manifest.

This module only ever reads: it opens files for reading and lists folders. The per-line/row parsers
(`parse_rafdb_line`, `parse_affectnet_row`, `parse_fer2013_row`, `parse_ferplus_row`) touch no file
system at all, which is what lets the property-based tests throw arbitrary text at them.
"""
# One name for every dataset's parser: records.py holds what they share, one module per dataset the rest.
from .records import (SKIP_REASONS, SPLITS, IMAGE_EXTENSIONS, DatasetLayoutError, Entry, ExportError, ExportPlan,
                      Record, Skip, count_lines, flat_name, read_csv, safe_parts)
from .rafdb import RAFDB_LABELS, parse_rafdb_line, plan_rafdb, rafdb_image_name
from .affectnet import (AFFECTNET_COLUMNS, AFFECTNET_LABELS, affectnet_label, parse_affectnet_row, plan_affectnet,
                        read_npy_label)
from .fer2013 import (FER2013_LABELS, FERPLUS_COLUMNS, FERPLUS_VOTES, fer2013_name, ferplus_majority, parse_fer2013_row,
                      parse_ferplus_row, plan_fer2013, plan_ferplus)

__all__ = [
    'SKIP_REASONS', 'SPLITS', 'IMAGE_EXTENSIONS', 'DatasetLayoutError', 'Entry', 'ExportError', 'ExportPlan', 'Record',
    'Skip', 'count_lines', 'flat_name', 'read_csv', 'safe_parts', 'RAFDB_LABELS',
    'parse_rafdb_line', 'plan_rafdb', 'rafdb_image_name', 'AFFECTNET_COLUMNS', 'AFFECTNET_LABELS', 'affectnet_label',
    'parse_affectnet_row', 'plan_affectnet', 'read_npy_label', 'FER2013_LABELS', 'FERPLUS_COLUMNS', 'FERPLUS_VOTES',
    'fer2013_name', 'ferplus_majority', 'parse_fer2013_row', 'parse_ferplus_row', 'plan_fer2013', 'plan_ferplus',
]
