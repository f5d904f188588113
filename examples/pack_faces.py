"""A grey 48 x 48 face export (FER2013, FERPlus) as one compressed file, and back: data for a lent GPU machine.

The device tool carries at most 64 MiB a call; the 33,709 FERPlus faces as PNG files are 143 MB, as one
LZMA-compressed uint8 array about 59 MB. `unpack` writes the same ImageFolder tree back (same split, class and
file names, lossless PNG, the export's manifest.json), so timm's train.py and `timm-msanet eval` read it as
they read the export. Never committed: the packed file holds the dataset's images (`.gpu_data/` is ignored).

    python examples/pack_faces.py pack data/ferplus .gpu_data/ferplus.faces      # here
    python examples/pack_faces.py unpack .gpu_data/ferplus.faces /tmp/ferplus    # on the GPU machine
"""
import argparse
import json
import lzma
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image

MAGIC = b'TMSFACES1'
SIDE = 48
TEXT_FILES = ('manifest.json', 'class_map.txt')  # what an export has besides its images


def pack(export: Path, out: Path) -> int:
    """Every image of EXPORT/SPLIT/CLASS/*.png|jpg (grey, 48 x 48), its manifest.json and class_map.txt into `out`."""
    files = sorted(p for p in export.glob('*/*/*') if p.suffix.lower() in ('.png', '.jpg', '.jpeg'))
    if not files:
        raise SystemExit(f'error: no images under {export}/SPLIT/CLASS/: expected a timm-msanet export')
    pixels = np.empty((len(files), SIDE, SIDE), np.uint8)
    for i, f in enumerate(files):
        with Image.open(f) as img:
            if img.size != (SIDE, SIDE):
                raise SystemExit(f'error: {f} is {img.size[0]}x{img.size[1]}; this packs {SIDE}x{SIDE} grey faces '
                                 f'(FER2013, FERPlus) only')
            grey = img.convert('L')
            if img.mode not in ('L', 'P', 'LA') and grey.convert(img.mode).tobytes() != img.tobytes():
                raise SystemExit(f'error: {f} is a colour image; this packs grey faces only')
            pixels[i] = np.asarray(grey)
    texts = {name: (export / name).read_text(encoding='utf-8') for name in TEXT_FILES if (export / name).is_file()}
    header = json.dumps(dict(files=[str(f.relative_to(export)) for f in files], side=SIDE, texts=texts)).encode()
    data = MAGIC + struct.pack('<Q', len(header)) + header + pixels.tobytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(lzma.compress(data, preset=6))
    print(f'packed {len(files):,} faces from {export} into {out} ({out.stat().st_size / 2**20:.1f} MiB)')
    return 0


def unpack(packed: Path, dest: Path) -> int:
    """The tree `pack` read, written under `dest` (which must not exist yet) as lossless PNG files."""
    if dest.exists():
        raise SystemExit(f'error: {dest} exists; unpack writes a new folder')
    data = lzma.decompress(packed.read_bytes())
    if not data.startswith(MAGIC):
        raise SystemExit(f'error: {packed} is not a file of `pack_faces.py pack`')
    (size,) = struct.unpack('<Q', data[len(MAGIC):len(MAGIC) + 8])
    start = len(MAGIC) + 8
    header = json.loads(data[start:start + size])
    side = header['side']
    pixels = np.frombuffer(data, np.uint8, offset=start + size).reshape(-1, side, side)
    if len(pixels) != len(header['files']):
        raise SystemExit(f'error: {packed} holds {len(pixels)} images for {len(header["files"])} names: truncated')
    for name, face in zip(header['files'], pixels):
        path = dest / Path(name).with_suffix('.png')
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face, 'L').save(path)
    for name, text in header['texts'].items():
        if name in TEXT_FILES:
            (dest / name).write_text(text, encoding='utf-8')
    print(f'unpacked {len(pixels):,} faces into {dest}')
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='what', required=True)
    p = sub.add_parser('pack')
    p.add_argument('export', type=Path)
    p.add_argument('out', type=Path)
    u = sub.add_parser('unpack')
    u.add_argument('packed', type=Path)
    u.add_argument('dest', type=Path)
    args = parser.parse_args(argv)
    return pack(args.export, args.out) if args.what == 'pack' else unpack(args.packed, args.dest)


if __name__ == '__main__':
    sys.exit(main())
