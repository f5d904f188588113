"""FER-trained MSA-Net releases, as data: the one place that lists them.

Each entry becomes a registered pretrained tag (`msanet_r18.fer2013`, loadable with
`timm.create_model('msanet_r18.fer2013', pretrained=True)`). A release's weights come from one of:

* `file`: a safetensors file installed with the package (under `timm_msanet/weights/`), loaded offline
  with no Hub and no download. `msanet_r18.fer2013` is such a release.
* `hf_hub_id`: the Hub repo `timm-msanet publish --repo-id` wrote. When a packaged release is uploaded,
  its `hf_hub_id` is added here and nothing else changes: timm still loads the installed file first
  (timm prefers `file` over `hf_hub_id`), and the cfg now also names the Hub repo.

    dict(
        arch='msanet_r18',              # a registered msanet architecture
        tag='fer2013',                  # the tag after the dot; any name but 'tv_in1k'
        dataset='fer2013',              # a key of DATASETS
        file='weights/msanet_r18_fer2013.safetensors',   # package-relative (and/or hf_hub_id='ORG/NAME')
        label_names=FER7_LABELS,        # the class order of the weights
        input_size=(3, 64, 64),         # the resolution it was trained at (default 224)
        grey_input=True,                # trained on greyscale faces: tools convert photos to grey first
        face_framing=dict(eye_y=0.396, eye_dist=0.362),  # where its training faces put the eyes (aligned crops)
        temperature=1.0,                # from `timm-msanet calibrate` on the validation split (see calibration.py)
        metrics={'accuracy': 0.0, 'mean_class_accuracy': 0.0},  # test-split figures
        protocol=dict(sha256='...', split='test', num_images=0),  # the eval's protocol block (`verify` checks it)
        default=True,                   # this tag is the architecture's default (`pretrained=True`)
    )

`msanet.py` puts the `default=True` entries before the `tv_in1k` tags (so `timm.create_model('msanet_r18',
pretrained=True)` gives the FER2013 expression model) and the others after them. `metrics` and `dataset`
are not timm cfg fields: they go into the cfg's `notes`, with the grey-input marker `GREY_INPUT_NOTE`.

Only list weights that exist: a cfg that points at missing weights breaks `pretrained=True` for that tag.
"""
import os
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

from .notes import FRAMING_NOTE, GREY_INPUT_NOTE, calibration_note, check_temperature
from .labels import FER7_LABELS, labels_for

# The one table of datasets: name -> title, allowed class counts, grey input, licence note and caveat (shown
# on model cards by publish.py and in the cfg description of a release here).
DATASETS: Dict[str, Dict[str, Any]] = {
    'rafdb': dict(title='RAF-DB', classes=(7,), licence=(
        'RAF-DB (Real-world Affective Faces Database) is released by its authors for non-commercial research '
        'only, under an agreement each user signs; the images may not be redistributed.')),
    'affectnet7': dict(title='AffectNet (7 classes, contempt excluded)', classes=(7,), licence=(
        'AffectNet is distributed by its authors under a research-only, non-commercial licence agreement; '
        'the images may not be redistributed.')),
    'affectnet8': dict(title='AffectNet (8 classes)', classes=(8,), licence=(
        'AffectNet is distributed by its authors under a research-only, non-commercial licence agreement; '
        'the images may not be redistributed.')),
    'fer2013': dict(title='FER2013', classes=(7,), grey=True, licence=(
        'FER2013 was released for the ICML 2013 representation learning challenge for research use; its '
        'faces were collected from the web without a licence for commercial use.'), caveat=(
        'About 8% of the PublicTest and PrivateTest images are byte-identical to training images, so test '
        'accuracy on FER2013 is slightly optimistic for unseen faces (for every FER2013 model alike).')),
    'ferplus': dict(title='FERPlus', classes=(7, 8), grey=True, licence=(
        'FERPlus relabels the FER2013 images, so the FER2013 terms (research use, faces collected from the web '
        'without a licence for commercial use) apply to the images and to models trained on them.'), caveat=(
        'FERPlus shares FER2013\'s images: about 8% of its test images are byte-identical to training images.')),
}


def export_name(dataset: str) -> str:
    """The name `timm-msanet export` records in its manifest for a DATASETS key (affectnet7/8 -> affectnet)."""
    return 'affectnet' if dataset in ('affectnet7', 'affectnet8') else dataset


ARCHS = ('msanet_r18', 'msanet_r18_ms', 'msanet_r18_as')
REQUIRED_KEYS = ('arch', 'tag', 'dataset', 'label_names', 'metrics')
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Test-split figures of `timm-msanet eval` on the packaged float16 weights, made by examples/release.sh (ImageNet
# conv1..layer2 start, examples/recipes/*_in1k.yaml, `calibrate --balance` on the validation split); every command
# and figure in docs/releases/.
PUBLISHED: Sequence[Mapping[str, Any]] = (
    dict(arch='msanet_r18', tag='fer2013', dataset='fer2013', file='weights/msanet_r18_fer2013.safetensors',
         hf_hub_id=None, label_names=FER7_LABELS, input_size=(3, 64, 64), grey_input=True, temperature=0.8343,
         face_framing=dict(eye_y=0.396, eye_dist=0.362),  # measured on its training images (publish --face-framing)
         metrics={'accuracy': 0.6679, 'mean_class_accuracy': 0.6376, 'ece': 0.0286}, default=True,
         protocol=dict(  # `timm-msanet eval` on the link-mode export of the FER2013 folders: PrivateTest
             sha256='eb3055c4195b2436912e1788fdb93ac2ff9d2e2102e9967a927e9ff4d1435aa0', split='test', num_images=3589,
             files_sha256='07c9f678979307bd1b198b2ce1f762a2195eab8668d4221c9e1c372890eb95d2',
             content_sha256='10af2b93a79f6847bf9c8b51ae2716a961b2b461a5bab0b4da4ab2a3f2b007ae',
             weights_sha256='5b213b284afef922ee7d9cf9a15d7d6ca57f78d89b1e83e36e3fe476cdf40e36', tta=None)),
    # FERPlus, 8 classes by majority vote: calibrated without the class-prior correction (see its card)
    dict(arch='msanet_r18', tag='ferplus', dataset='ferplus', file='weights/msanet_r18_ferplus.safetensors',
         hf_hub_id=None, label_names=labels_for(8), input_size=(3, 64, 64), grey_input=True, temperature=0.7927,
         face_framing=dict(eye_y=0.395, eye_dist=0.361),
         metrics={'accuracy': 0.8258, 'mean_class_accuracy': 0.5877, 'ece': 0.0351},
         protocol=dict(  # `timm-msanet eval` on `export ferplus ... --classes 8` of tessav/crowd-emotion: FER2013Test
             sha256='255ac2f213a2e12299f03c2e4c9a0717ed9215ecb996046f59ed580a98d2612d', split='test', num_images=3376,
             files_sha256='9348583205c54fc8c6a9dfbe3457ffc778919e8904ec834b52efe4434bb47077',
             content_sha256='1c534e84cfe09f93aa1990f2375322c8802d5dde1a11630f90e0e80f8ac9f3d7',
             weights_sha256='cbb1749e26edc6306743b42ec683994772c1bc5f2195d5f394a87fe9500d402f', tta=None)),
)


def validate_entry(entry: Mapping[str, Any]) -> None:
    """Raise ValueError saying what is wrong with a release entry."""
    missing = [k for k in REQUIRED_KEYS if k not in entry]
    if missing:
        raise ValueError(f'published entry {dict(entry)!r} lacks {missing}; every entry needs {list(REQUIRED_KEYS)}')
    name = f"{entry['arch']}.{entry['tag']}"
    if entry['arch'] not in ARCHS:
        raise ValueError(f'{name}: arch must be one of {ARCHS}')
    if not entry['tag'] or entry['tag'] == 'tv_in1k' or '.' in str(entry['tag']):
        raise ValueError(f"{name}: tag must be a non-empty name without '.', other than 'tv_in1k'")
    if not entry.get('file') and not entry.get('hf_hub_id'):
        raise ValueError(f'{name}: give the weights as file= (package-relative) and/or hf_hub_id=')
    if entry.get('hf_hub_id') and str(entry['hf_hub_id']).count('/') != 1:
        raise ValueError(f"{name}: hf_hub_id must be 'ORG/NAME', got {entry['hf_hub_id']!r}")
    if entry.get('file') and (os.path.isabs(entry['file']) or '..' in str(entry['file']).split('/')):
        raise ValueError(f"{name}: file must be a path inside the package, got {entry['file']!r}")
    size = tuple(entry.get('input_size') or (3, 224, 224))
    if len(size) != 3 or not all(isinstance(v, int) and 0 < v <= 4096 for v in size):
        raise ValueError(f'{name}: input_size must be (channels, height, width), got {size}')
    if entry['dataset'] not in DATASETS:
        raise ValueError(f"{name}: dataset must be one of {list(DATASETS)}, got {entry['dataset']!r}")
    labels = tuple(entry['label_names'])
    try:
        canonical = labels_for(len(labels))
    except ValueError as e:
        raise ValueError(f'{name}: {e}') from None
    if labels != canonical:
        raise ValueError(f'{name}: label_names must be the canonical order {canonical}, got {labels}')
    if not isinstance(entry['metrics'], Mapping):
        raise ValueError(f'{name}: metrics must be a dict, e.g. {{"accuracy": 0.88}}')
    framing = entry.get('face_framing')
    if framing is not None and not (isinstance(framing, Mapping) and set(framing) == {'eye_y', 'eye_dist'}
                                    and all(isinstance(v, float) and 0 < v < 1 for v in framing.values())):
        raise ValueError(f'{name}: face_framing must be dict(eye_y=..., eye_dist=...), fractions of the crop side')
    protocol = entry.get('protocol')
    if protocol is not None and not (isinstance(protocol, Mapping) and isinstance(protocol.get('sha256'), str)
                                     and protocol.get('split')):
        raise ValueError(f'{name}: protocol must be the protocol block of `timm-msanet eval` (sha256, split, ...)')


def pool_size_for(hw: Sequence[int]) -> tuple:
    """The map the head's global pool sees at input height, width (the network's stride is 32)."""
    return tuple(max(1, -(-int(v) // 32)) for v in hw)


def weights_path(entry: Mapping[str, Any]) -> Optional[str]:
    """Absolute path of a packaged release's weights file (None for Hub-only releases)."""
    return os.path.join(PACKAGE_DIR, *str(entry['file']).split('/')) if entry.get('file') else None


def published_cfgs(cfg_fn: Callable[..., Dict[str, Any]],
                   entries: Optional[Iterable[Mapping[str, Any]]] = None,
                   default: Optional[bool] = None) -> Dict[str, Dict[str, Any]]:
    """`{'arch.tag': cfg}` for every release, built with `cfg_fn` (msanet.py's `_cfg`), ready to merge into
    the dict given to timm's `generate_default_cfgs`. `entries` defaults to `PUBLISHED`; `default` keeps
    only the entries whose `default` flag is that value (None: all)."""
    out: Dict[str, Dict[str, Any]] = {}
    for entry in (PUBLISHED if entries is None else entries):
        validate_entry(entry)
        if default is not None and bool(entry.get('default')) != default:
            continue
        name = f"{entry['arch']}.{entry['tag']}"
        if name in out:
            raise ValueError(f'{name} is listed twice in releases.py')
        labels = tuple(entry['label_names'])
        size = tuple(entry.get('input_size') or (3, 224, 224))
        metrics = ', '.join(f'{k}={v}' for k, v in entry['metrics'].items()
                            if v is not None and not isinstance(v, (dict, list)))
        notes = [f"dataset={entry['dataset']}; research / non-commercial dataset licence; {metrics}".rstrip('; ')]
        if entry.get('grey_input'):
            notes.append(GREY_INPUT_NOTE)
        if entry.get('face_framing'):
            notes.append(FRAMING_NOTE.format(**entry['face_framing']))
        if entry.get('temperature') not in (None, 1.0):
            notes.append(calibration_note(check_temperature(entry['temperature'], f'{name}: temperature')))
        source = dict(hf_hub_id=entry['hf_hub_id']) if entry.get('hf_hub_id') else {}
        if entry.get('file'):
            source['file'] = weights_path(entry)
        out[name] = cfg_fn(
            **source,
            num_classes=len(labels),
            label_names=labels,
            input_size=size,
            pool_size=pool_size_for(size[1:]),
            license='other',
            origin_url=f"https://huggingface.co/{entry['hf_hub_id']}" if entry.get('hf_hub_id') else None,
            description=f"MSA-Net trained on {DATASETS[entry['dataset']]['title']} ({len(labels)} classes)",
            notes=tuple(notes),
        )
    return out
