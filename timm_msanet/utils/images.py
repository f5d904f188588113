"""Images as the models see them: decoding any input to 8-bit RGB, the model's own eval transform, and the
results drawn back onto an image (`annotate_image`).

Used by predict, video, explain, eval (grey input) and export-onnx (the data config in the ONNX metadata).

* Preprocessing is the model's own data config (`timm.data.resolve_data_config` + `create_transform`,
  eval mode): squash resize to the cfg's input size, ImageNet mean/std, exactly what training used.
  `img_size` overrides only the size. Grayscale (`in_chans=1`) models get an 'L' image and the mean of
  the RGB mean/std. Models trained on grey faces (cfg note `notes.GREY_INPUT_NOTE`) without a grey step of
  their own get the image converted to grey and back to 3 equal channels (`eval_transform(grey=True)`;
  `loading.record.ExpressionModel` decides it).
* Every input is made 8-bit RGB before the transform: EXIF orientation applied; CMYK, YCbCr, LAB, HSV,
  1-bit, 'L' and palette images converted; transparency (RGBA, LA, palette with a transparent index)
  composited over white; 16-bit ('I;16*', and 'I' holding values above 255) scaled by 1/257, 32-bit
  float taken as [0, 1] when its maximum is <= 1. numpy arrays: HWC or HW, uint8 as is, uint16 scaled,
  float in [0, 1]. Tensors: CHW (or NCHW: each image an input) raw images, uint8 or float in [0, 1],
  not already normalised: they go through the same transform.
* HEIF/HEIC photos (what iPhone cameras save by default) are read through pillow-heif when it is installed
  (`pip install "timm-msanet[heif]"`); without it such a file is refused with that instruction, not with PIL's
  "cannot identify image file". AVIF is read by Pillow itself.
"""
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

if TYPE_CHECKING:  # annotations only: PIL is imported inside the functions
    from PIL import Image


def _scale_to_uint8(arr):
    import numpy as np

    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float32))
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if arr.dtype == np.uint16 or (arr.size and arr.max() > 255):
        return np.clip(np.rint(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def to_rgb(img):
    """Return an 8-bit RGB copy of a PIL image of any mode (see the module docstring for the rules)."""
    import numpy as np
    from PIL import Image, ImageOps

    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF: keep the pixels as stored
        pass
    mode = img.mode
    if mode == 'RGB':
        return img
    if mode == 'P':
        img = img.convert('RGBA' if 'transparency' in img.info else 'RGB')
        mode = img.mode
    if mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
        rgba = img.convert('RGBA')
        background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert('RGB')
    if mode.startswith('I') or mode == 'F':
        arr = np.asarray(img)
        if arr.ndim == 3:  # e.g. I;16 with channels: take the first as gray
            arr = arr[..., 0]
        if mode.startswith('I;16'):
            arr = arr.astype(np.uint16)
        return Image.fromarray(_scale_to_uint8(arr), 'L').convert('RGB')
    return img.convert('RGB')  # CMYK, YCbCr, LAB, HSV, L, 1, ...


# No photo or face crop a user feeds comes near this; a bigger file is refused unread, so a file never decides
# how much memory is read (PIL's decompression-bomb limit bounds the decoded pixels).
MAX_IMAGE_BYTES = 64 * 2**20


class ImageFileError(OSError):
    """A path that is not readable as an image file: `reason` is 'missing_image', 'not_a_file', 'too_large',
    'needs_heif' (a HEIF/HEIC photo without pillow-heif installed), 'empty_file', 'unidentified_image' (bytes
    that no installed image format recognises) or 'undecodable_image' (truncated or corrupt pixel data).
    An OSError, so code that catches PIL's own errors catches these too; the message says what was expected,
    where PIL's says 'cannot identify image file <_io.BytesIO object at 0x...>'."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def open_image_file(path, limit: int = MAX_IMAGE_BYTES) -> int:
    """Open an image file for reading and return its descriptor, or raise ImageFileError: it must be a regular
    file (a FIFO or device is never read: it could block or never end) of at most `limit` bytes. Opened
    without blocking, then checked on the open file (so a swap after a check cannot slip through)."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        raise ImageFileError('missing_image', f'{type(e).__name__}: {e}') from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageFileError('not_a_file', f'{path} is not a regular file (a folder, FIFO or device): not read')
        if st.st_size > limit:
            raise ImageFileError('too_large', f'{path} has {st.st_size:,} bytes, more than the {limit:,} an image '
                                 f'may have here: not read')
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_image_file(path, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of an image file, with the checks of `open_image_file` (and `limit` also held while reading)."""
    import os

    with os.fdopen(open_image_file(path, limit), 'rb') as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # grew after the check
        raise ImageFileError('too_large', f'{path} has more than {limit:,} bytes: not read')
    return data


HEIF_EXTENSIONS = frozenset({'.heic', '.heif', '.hif'})
# major brands of HEIF still images (ISO/IEC 23008-12): HEVC-coded 'heic'/'heix' (iPhone photos), their
# sequence and multi-layer forms, and the generic 'mif1'/'msf1'; AVIF files say 'avif' and Pillow reads them
_HEIF_BRANDS = frozenset({b'heic', b'heix', b'heim', b'heis', b'hevc', b'hevx', b'hevm', b'hevs', b'mif1', b'msf1'})


def is_heif(data: bytes) -> bool:
    """Whether `data` starts as a HEIF still image: an ISO base media 'ftyp' box with a HEIF major brand."""
    return data[4:8] == b'ftyp' and data[8:12] in _HEIF_BRANDS


def open_image_bytes(data: bytes, name: str = 'the image') -> 'Image.Image':
    """`PIL.Image.open` of an image file's bytes (lazy, as PIL's), with HEIF/HEIC read through pillow-heif.
    Raises ImageFileError('needs_heif') for a HEIF file when pillow-heif is not installed."""
    import io
    from PIL import Image, UnidentifiedImageError

    if is_heif(data):
        try:
            import pillow_heif
        except ImportError:
            raise ImageFileError('needs_heif', f'{name} is a HEIF/HEIC photo (what iPhone cameras save); reading '
                                 f'it needs pillow-heif: pip install "timm-msanet[heif]" (or save the photo as '
                                 f'JPEG or PNG)') from None
        pillow_heif.register_heif_opener()  # idempotent; registered only when a HEIF file is met
    if not data:
        raise ImageFileError('empty_file', f'{name} is empty (0 bytes): expected an image file (JPEG, PNG, WebP, '
                             f'HEIC, ...)')
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageFileError('unidentified_image', f'{name} is not an image file Pillow can read ({len(data):,} '
                             f'bytes, starting {data[:8]!r}): expected JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC '
                             f'(HEIC with pillow-heif)') from None
    except (OSError, SyntaxError, EOFError) as e:  # a known format whose header ends early or is corrupt
        raise _undecodable(name, len(data), e) from None


def _undecodable(name: str, size: Optional[int], e: BaseException) -> ImageFileError:
    of = f'{size:,} bytes; ' if size is not None else ''
    return ImageFileError('undecodable_image', f'{name} cannot be decoded ({of}Pillow says: {e}): the file is '
                          f'truncated or corrupt (an interrupted copy or download?); copy it again or re-export it')


def decode_fully(img: 'Image.Image', name: str = 'the image', size: Optional[int] = None) -> None:
    """`img.load()`, with truncated or corrupt pixel data raised as ImageFileError('undecodable_image')."""
    try:
        img.load()
    except ImageFileError:
        raise
    except (OSError, SyntaxError, EOFError) as e:  # what PIL's decoders raise for data that ends early or is bad
        raise _undecodable(name, size, e) from None


def load_image(path) -> 'Image.Image':
    """Open and fully decode an image file as 8-bit RGB; raises on unreadable, truncated, oversized or
    non-regular files (ImageFileError, PIL's errors)."""
    data = read_image_file(path)
    with open_image_bytes(data, str(path)) as img:
        decode_fully(img, str(path), len(data))
        return to_rgb(img)


def _array_to_pil(arr):
    import numpy as np
    from PIL import Image

    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return Image.fromarray(_scale_to_uint8(arr), 'L').convert('RGB')
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f'expected an HWC (3 or 4 channels) or HW image array, got shape {arr.shape}')
    arr = _scale_to_uint8(arr)
    if arr.shape[-1] == 4:
        return to_rgb(Image.fromarray(np.ascontiguousarray(arr), 'RGBA'))
    return Image.fromarray(np.ascontiguousarray(arr), 'RGB')


def _tensor_to_pil(t):
    t = t.detach().cpu()
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise ValueError(f'expected a CHW image tensor with 1, 3 or 4 channels, got shape {tuple(t.shape)}')
    return _array_to_pil(t.permute(1, 2, 0).numpy())


def as_pil(x) -> 'Image.Image':
    """Any supported single input (path, PIL image, numpy array, CHW tensor) as an 8-bit RGB PIL image."""
    from PIL import Image

    if isinstance(x, (str, Path)):
        return load_image(x)
    if isinstance(x, Image.Image):
        return to_rgb(x)
    if type(x).__module__.startswith('torch'):
        return _tensor_to_pil(x)
    return _array_to_pil(x)


def eval_transform(data_cfg: Dict[str, Any], in_chans: Optional[int] = None, grey: bool = False):
    """(transform, data config): timm's eval transform of a resolved data config (`create_transform`). A
    1-channel model gets the image as 'L' (mean/std averaged); `grey` (a model trained on grey faces without a
    grey step of its own) shows a colour image as its grey image, 3 equal channels (`GreyInput`)."""
    from timm.data import create_transform

    cfg = dict(data_cfg)
    chans = in_chans or cfg['input_size'][0]
    if chans == 1:
        cfg['input_size'] = (1,) + tuple(cfg['input_size'][1:])
        if len(cfg['mean']) == 3:
            cfg['mean'] = (sum(cfg['mean']) / 3,)
            cfg['std'] = (sum(cfg['std']) / 3,)
    transform = create_transform(**cfg, is_training=False)
    if chans == 1:
        base = transform
        transform = lambda img: base(img.convert('L'))  # noqa: E731
    elif grey:
        transform = GreyInput(transform)
    return transform, cfg


class GreyInput:
    """A transform for grey-trained models (FER2013): colour photos are shown to them as the grey image they
    would have seen (3 equal channels). A class, not a lambda, so DataLoader workers can pickle it."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        return self.transform(img.convert('L').convert('RGB'))

    def __repr__(self) -> str:
        return f'GreyInput({self.transform!r})'


def font(size: int):
    """PIL's default font at `size` px (a fixed-size bitmap font on Pillow < 10.1)."""
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def annotate_image(img, result: Dict[str, Any]):
    """A copy of `img` with face boxes (or the whole-image label) and their labels drawn on it."""
    from PIL import ImageDraw

    img = as_pil(img).copy()
    draw = ImageDraw.Draw(img)
    w, h = img.size
    line = max(2, round(max(w, h) / 300))
    tag_font = font(max(12, round(max(w, h) / 40)))

    def tag(x, y, text, color):
        x0, y0, x1, y1 = draw.textbbox((x, y), text, font=tag_font)
        pad = line
        if y0 - (y1 - y0) - 2 * pad >= 0:  # above the box when there is room
            y -= (y1 - y0) + 2 * pad
            x0, y0, x1, y1 = draw.textbbox((x, y), text, font=tag_font)
        draw.rectangle((x0 - pad, y0 - pad, x1 + pad, y1 + pad), fill=color)
        draw.text((x, y), text, fill='white', font=tag_font)

    if 'faces' in result:
        boxes = [f['box'] for f in result['faces']]
        main = max(range(len(boxes)), key=lambda i: (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]),
                   default=None)
        for i, face in enumerate(result['faces']):
            color = MAIN_FACE_COLOUR if i == main else OTHER_FACE_COLOUR
            draw.rectangle(face['box'], outline=color, width=line)
            for x, y in (face.get('landmarks') or {}).values():
                r = line + 1
                draw.ellipse((x - r, y - r, x + r, y + r), fill=LANDMARK_COLOUR)
            if face.get('label'):
                tag(face['box'][0], face['box'][1], f"{face['label']} {face['score']:.2f}", color)
        if boxes:
            legend(draw, (w, h), tag_font, line, any(f.get('landmarks') for f in result['faces']))
        elif result.get('label'):  # a face crop, classified whole
            tag(line, line, f"whole image: {result['label']} {result['score']:.2f}", MAIN_FACE_COLOUR)
        else:
            tag(line, line, 'no face detected', (90, 90, 90))
    elif result.get('label'):
        tag(line, line, f"{result['label']} {result['score']:.2f}", MAIN_FACE_COLOUR)
    return img


MAIN_FACE_COLOUR = (230, 40, 40)   # the largest face: its label is the image's own
OTHER_FACE_COLOUR = (40, 120, 230)
LANDMARK_COLOUR = (40, 220, 60)


def legend(draw, size: Tuple[int, int], tag_font, pad: int, landmarks: bool) -> None:
    """What the colours of an annotated image mean, in its bottom-left corner."""
    entries = [(MAIN_FACE_COLOUR, "largest face (the image's label)"), (OTHER_FACE_COLOUR, 'other faces')]
    if landmarks:
        entries.append((LANDMARK_COLOUR, 'landmarks (face aligned)'))
    heights = [draw.textbbox((0, 0), text, font=tag_font)[3] for _, text in entries]
    y = size[1] - pad - sum(h + 2 * pad for h in heights)
    for (colour, text), h in zip(entries, heights):
        x1, _, x2, _ = draw.textbbox((0, 0), text, font=tag_font)
        draw.rectangle((pad, y, pad + h + 4 * pad + (x2 - x1), y + h + pad), fill=(255, 255, 255))
        draw.rectangle((2 * pad, y + pad // 2, 2 * pad + h, y + pad // 2 + h), fill=colour)
        draw.text((3 * pad + h, y), text, fill=(0, 0, 0), font=tag_font)
        y += h + 2 * pad


def readable_image_extensions() -> frozenset:
    """Extensions of the image formats Pillow opens here (not the save-only ones such as .pdf), and HEIF's: those
    are read through pillow-heif, or refused with what to install."""
    from PIL import Image

    formats = Image.registered_extensions()  # initialises Pillow's plugins first
    return frozenset(e.lower() for e, f in formats.items() if f in Image.OPEN) | HEIF_EXTENSIONS


def collect_files(paths: Iterable[str], exclude: Optional[Path] = None) -> List[Tuple[Path, Path]]:
    """(file, root) pairs: files as given, folders searched recursively for image extensions (sorted). A file
    reached twice (given and inside a given folder) comes once. `exclude` is predict's own --annotate folder,
    whose copies would come back as inputs on the next run: inside a searched folder it is not searched, and
    when it is the searched folder itself, its `*_annotated*` copies are left out."""
    import os
    import re

    # HEIF photos are searched for even before pillow-heif registers them: read, or refused with what to install
    exts = readable_image_extensions()
    skip = Path(os.path.realpath(exclude)) if exclude is not None and exclude.is_dir() else None
    out, seen = [], set()

    def real(f: Path) -> Path:  # os.path.realpath, unlike Path.resolve, does not raise on a symlink loop
        return Path(os.path.realpath(f))

    def ours(f: Path, root: Path) -> bool:
        if skip is None:
            return False
        where = real(f)
        if skip == real(root):
            return where.parent == skip and re.search(r'_annotated\d*$', f.stem) is not None
        return skip in where.parents

    def add(f: Path, root: Path) -> None:
        key = real(f)
        if key not in seen:
            seen.add(key)
            out.append((f, root))
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob('*') if f.is_file() and f.suffix.lower() in exts
                           and not any(part.startswith('.') for part in f.relative_to(p).parts) and not ours(f, p))
            for f in files:
                add(f, p)
        else:
            add(p, p.parent)  # a missing path is reported as that input's error
    return out
