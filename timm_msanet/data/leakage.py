"""Train/test leakage: content and perceptual hashes of every exported image, and the pairs that cross splits.

FER2013 holds hundreds of byte-identical train/test pairs, and a copy that was re-encoded or resized is no
more unseen than a byte-identical one. `timm-msanet export` therefore hashes every image twice:

* content hash: sha256 of the source file's bytes (what `sha256sum` prints), or of the 48x48 pixel values
  for FER2013 csv rows (they have no file). With `--crop-face` the face box is hashed along with the bytes:
  two faces cropped from one photo are different samples.
* perceptual hash: 64 bits from the image as exported (after any crop or resize), converted to grey:
  resized to 32x32 (bilinear, antialiased), 2-D DCT-II, the 8x8 lowest frequencies, one bit per
  coefficient: above their median or not (so exactly 32 bits are set, and distances are even).
  Re-encoding and moderate resizes move a few bits; different faces differ in about half of them.

Two images in different splits are a pair when their perceptual hashes differ in at most `threshold` bits
(`DEFAULT_THRESHOLD`, chosen on real images, see docs/datasets.md); a pair is `identical` when the content
hashes agree too. Pairs are counted per split pair (`train~test`, `train~validation`, `validation~test`),
with how many disagree on the label. Matching is exhaustive, not approximate: every distinct hash of one
split against every distinct hash of the other, in blocks of bounded memory; images that share a hash form
one group, so a split full of copies is counted group by group, never pair by pair.
"""
from __future__ import annotations

import hashlib
import itertools
from collections import Counter, defaultdict
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..utils.errors import ToolError

__all__ = ['DEFAULT_THRESHOLD', 'HASH_SIZE', 'HashedImage', 'Pair', 'GroupPair', 'content_hash', 'perceptual_hash',
           'hamming', 'cross_split_pairs', 'iter_pairs', 'leak_report', 'train_copies', 'summary_lines']

HASH_SIZE = 8  # 8x8 DCT coefficients -> 64 bits
DEFAULT_THRESHOLD = 4  # bits out of 64; see docs/datasets.md for how it was chosen
# At 10 bits the nearest FER2013 train image of a test image is another face (median pixel correlation 0.60):
# thresholds above MAX_THRESHOLD do not mean "duplicate". MAX_GROUP_PAIRS bounds the memory of the pairs kept
# (each a few hundred bytes) whatever the data: more than that is refused in one line, not a MemoryError.
MAX_THRESHOLD = 12
MAX_GROUP_PAIRS = 2_000_000


class LeakCheckError(ToolError):
    """The leak check found more pairs than it keeps: the threshold pairs distinct images."""
MAX_LISTED_PAIRS = 10_000
_DCT_SIDE = 32


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT_LOW = np.ascontiguousarray(_dct_matrix(_DCT_SIDE)[:HASH_SIZE])  # only the lowest frequencies are kept
_DCT_LOW_T = np.ascontiguousarray(_DCT_LOW.T)


def content_hash(data: bytes, extra: bytes = b'') -> str:
    """sha256 hex digest of `data` (and `extra`, e.g. a face box, when given)."""
    h = hashlib.sha256(data)
    if extra:
        h.update(extra)
    return h.hexdigest()


def perceptual_hash(img: Image.Image) -> int:
    """64-bit DCT hash of an image's luminance (see the module docstring)."""
    grey = img.convert('L').resize((_DCT_SIDE, _DCT_SIDE), Image.Resampling.BILINEAR)
    low = (_DCT_LOW @ np.asarray(grey, dtype=np.float64) @ _DCT_LOW_T).ravel()
    half = HASH_SIZE * HASH_SIZE // 2
    median = np.partition(low, (half - 1, half))[half - 1:half + 1].mean()  # np.median, without its overhead
    return int.from_bytes(np.packbits(low > median).tobytes(), 'big')


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


if hasattr(np, 'bitwise_count'):  # numpy >= 2.0
    def _popcount(x: np.ndarray) -> np.ndarray:
        return np.bitwise_count(x)
else:
    _BYTE_COUNTS = np.array([bin(i).count('1') for i in range(256)], dtype=np.uint8)

    def _popcount(x: np.ndarray) -> np.ndarray:
        return _BYTE_COUNTS[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.uint8)


class HashedImage(NamedTuple):
    """One exported image: where it went, and its two hashes (phash None: it could not be decoded)."""
    split: str
    label: str
    file: str  # output path relative to OUTPUT: split/label/name
    item: str  # the source entry, as the manifest names it
    sha256: str
    phash: Optional[int]


class Pair(NamedTuple):
    a: int  # indices into the hashed list; a's split comes first in the split order
    b: int
    distance: int
    identical: bool


class GroupPair(NamedTuple):
    """Every image of `a` pairs with every image of `b`: images with one perceptual hash (or, undecodable, one
    content hash) form a group, so a dataset full of copies (blank faces, one image linked many times) is
    matched and counted group by group instead of pair by pair."""
    a: Tuple[int, ...]
    b: Tuple[int, ...]
    distance: int


def _block_rows(n_other: int) -> int:
    return max(1, (1 << 22) // max(1, n_other))  # ~4M hash comparisons (32 MB) per block


def _groups(images: Sequence[HashedImage], indices: List[int]) -> Tuple[Dict[int, List[int]], Dict[str, List[int]]]:
    by_phash: Dict[int, List[int]] = defaultdict(list)
    undecodable: Dict[str, List[int]] = defaultdict(list)
    for i in indices:
        if images[i].phash is None:
            undecodable[images[i].sha256].append(i)
        else:
            by_phash[images[i].phash].append(i)
    return by_phash, undecodable


def cross_split_pairs(images: Sequence[HashedImage], splits: Sequence[str], threshold: int) -> List[GroupPair]:
    """Every pair of images in different splits whose perceptual hashes are within `threshold` bits, plus
    byte-identical images that could not be decoded, as groups (see GroupPair). Exhaustive: each distinct
    hash of one split is compared with each distinct hash of the other, in bounded blocks."""
    by_split: Dict[str, List[int]] = defaultdict(list)
    for i, im in enumerate(images):
        by_split[im.split].append(i)
    order = [s for s in splits if by_split.get(s)] + sorted(s for s in by_split if s not in splits)
    groups = {s: _groups(images, by_split[s]) for s in order}
    out: List[GroupPair] = []
    for ia, sa in enumerate(order):
        for sb in order[ia + 1:]:
            (pa, ua), (pb, ub) = groups[sa], groups[sb]
            out.extend(_match(pa, pb, threshold))
            out.extend(GroupPair(tuple(ua[sha]), tuple(ub[sha]), 0) for sha in ua if sha in ub)
    return out


def _match(left: Dict[int, List[int]], right: Dict[int, List[int]], threshold: int) -> List[GroupPair]:
    if not left or not right:
        return []
    l_keys = list(left)
    l_hash = np.array(l_keys, dtype=np.uint64)
    r_keys = list(right)
    out = []
    step = _block_rows(len(l_keys))
    for start in range(0, len(r_keys), step):
        block = r_keys[start:start + step]
        dist = _popcount(np.array(block, dtype=np.uint64)[:, None] ^ l_hash[None, :])
        rows, cols = np.nonzero(dist <= threshold)
        if len(out) + len(rows) > MAX_GROUP_PAIRS:
            raise LeakCheckError(f'the leak check found more than {MAX_GROUP_PAIRS:,} pairs of images within '
                                 f'{threshold} bits: at this threshold it pairs distinct images, not copies; lower '
                                 f'--leak-threshold (default {DEFAULT_THRESHOLD})')
        for r, c in zip(rows.tolist(), cols.tolist()):
            out.append(GroupPair(tuple(left[l_keys[c]]), tuple(right[block[r]]), int(dist[r, c])))
    return out


def iter_pairs(images: Sequence[HashedImage], groups: Iterable[GroupPair]) -> Iterator[Pair]:
    """The image pairs of the groups, one by one (a generator: their number can be the product of two splits)."""
    for g in groups:
        for i in g.a:
            for j in g.b:
                yield Pair(i, j, g.distance, images[i].sha256 == images[j].sha256)


def _describe(im: HashedImage) -> Dict[str, str]:
    return {'split': im.split, 'label': im.label, 'file': im.file, 'item': im.item}


def _count_group(images: Sequence[HashedImage], g: GroupPair) -> Counter:
    """Pairs, byte-identical pairs and label disagreements of a group pair, counted without enumerating it."""
    la = Counter(images[i].label for i in g.a)
    lb = Counter(images[j].label for j in g.b)
    sa = Counter((images[i].sha256, images[i].label) for i in g.a)
    sb = Counter((images[j].sha256, images[j].label) for j in g.b)
    sha_a = Counter(images[i].sha256 for i in g.a)
    sha_b = Counter(images[j].sha256 for j in g.b)
    pairs = len(g.a) * len(g.b)
    identical = sum(n * sha_b[k] for k, n in sha_a.items())
    identical_same_label = sum(n * sb[k] for k, n in sa.items())
    return Counter(pairs=pairs, identical_pairs=identical,
                   label_disagreements=pairs - sum(n * lb[k] for k, n in la.items()),
                   identical_label_disagreements=identical - identical_same_label)


def leak_report(images: Sequence[HashedImage], groups: Sequence[GroupPair], splits: Sequence[str],
                threshold: int) -> Dict[str, Any]:
    """The manifest's `leak_check` block: counts per split pair, label disagreements, the first pairs."""
    per: Dict[str, Counter] = {}
    touched: Dict[str, Dict[str, set]] = {}
    for g in groups:
        sa, sb = images[g.a[0]].split, images[g.b[0]].split
        key = f'{sa}~{sb}'
        per.setdefault(key, Counter()).update(_count_group(images, g))
        sides = touched.setdefault(key, {sa: set(), sb: set()})
        sides[sa].update(g.a)
        sides[sb].update(g.b)
    cross = {}
    fields = ('pairs', 'identical_pairs', 'label_disagreements', 'identical_label_disagreements')
    for key, c in per.items():
        cross[key] = {**{f: c[f] for f in fields}, 'images': {s: len(ids) for s, ids in touched[key].items()}}
    total = sum(c['pairs'] for c in per.values())
    listed = [{'distance': p.distance, 'identical': p.identical, 'a': _describe(images[p.a]),
               'b': _describe(images[p.b])} for p in itertools.islice(iter_pairs(images, groups), MAX_LISTED_PAIRS)]
    return {
        'method': {
            'content': 'sha256 of the source bytes (FER2013 csv rows: of the 48x48 pixel values)',
            'perceptual': f'{HASH_SIZE * HASH_SIZE}-bit DCT hash of the grey image as exported (32x32 bilinear, '
                          f'8x8 lowest DCT coefficients above their median)',
            'threshold_bits': threshold,
        },
        'hashed': len(images),
        'not_decodable': sum(im.phash is None for im in images),
        'by_split': dict(Counter(im.split for im in images)),
        'cross_split': cross,
        'pairs_total': total,
        'pairs': listed,
        'pairs_not_listed': max(0, total - len(listed)),
    }


def train_copies(images: Sequence[HashedImage], groups: Iterable[GroupPair], keep: int = 5) -> Dict[int, List[int]]:
    """Training images that pair with a validation or test image -> up to `keep` of those images."""
    out: Dict[int, List[int]] = defaultdict(list)
    for g in groups:
        sa, sb = images[g.a[0]].split, images[g.b[0]].split
        if (sa == 'train') == (sb == 'train'):
            continue
        train, other = (g.a, g.b) if sa == 'train' else (g.b, g.a)
        for i in train:
            room = keep - len(out[i])
            if room > 0:
                out[i].extend(other[:room])
    return dict(out)


def summary_lines(report: Dict[str, Any]) -> List[str]:
    """One line per split pair for `format_summary`."""
    cross = report.get('cross_split') or {}
    t = report['method']['threshold_bits']
    if not cross:
        return [f'leak check: no image appears in two splits ({report["hashed"]} hashed, perceptual threshold '
                f'{t} bits)']
    lines = []
    for key, c in cross.items():
        left, right = key.split('~')
        lines.append(
            f'leak check {key}: {c["pairs"]} pairs ({c["identical_pairs"]} byte-identical), '
            f'{c["label_disagreements"]} with different labels; {c["images"].get(right, 0)} {right} images have a '
            f'copy in {left} (perceptual threshold {t} bits)')
    return lines
