"""FER-trained MSA-Net releases on the Hugging Face Hub, as data: the one place that lists them.

Nothing is published yet, so `PUBLISHED` is empty. A release published with `timm-msanet publish` becomes
a registered pretrained tag (e.g. `msanet_r18.rafdb`, loadable with
`timm.create_model('msanet_r18.rafdb', pretrained=True)`) by appending one dict here, and nothing else:

    dict(
        arch='msanet_r18',              # a registered msanet architecture
        tag='rafdb',                    # the tag after the dot; any name but 'tv_in1k'
        hf_hub_id='ORG/NAME',           # the repo `timm-msanet publish --repo-id` wrote
        dataset='rafdb',                # one of publish.DATASETS
        label_names=FER7_LABELS,        # the class order in that repo's config.json
        metrics={'accuracy': 0.0, 'mean_class_accuracy': 0.0},  # test-split figures from its model card
    )

`msanet.py` merges `published_cfgs(_cfg)` at the end of its `default_cfgs`, after the `tv_in1k` tags, so
`tv_in1k` stays each architecture's default tag (`timm.create_model('msanet_r18', pretrained=True)` keeps
meaning the ImageNet pre-extractor) and a FER release is asked for by its tag. The weights are the repo's
`model.safetensors`; the cfg carries the repo's class count and label order (timm then builds the head with
that many classes). `metrics` and `dataset` are not timm cfg fields: they stay here for documentation and
tooling, and go into the cfg only as a one-line `notes` entry.

Only list repos that exist: a cfg that points at missing weights breaks `pretrained=True` for that tag.
"""
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

from .labels import labels_for

# Keep in sync with publish.DATASETS (a test checks it); repeated here so msanet.py's import stays light.
DATASET_NAMES: Dict[str, str] = {
    'rafdb': 'RAF-DB', 'affectnet7': 'AffectNet (7 classes)', 'affectnet8': 'AffectNet (8 classes)',
    'fer2013': 'FER2013', 'ferplus': 'FERPlus',
}
ARCHS = ('msanet_r18', 'msanet_r18_ms', 'msanet_r18_as')
REQUIRED_KEYS = ('arch', 'tag', 'hf_hub_id', 'dataset', 'label_names', 'metrics')

PUBLISHED: Sequence[Mapping[str, Any]] = ()


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
    if str(entry['hf_hub_id']).count('/') != 1:
        raise ValueError(f"{name}: hf_hub_id must be 'ORG/NAME', got {entry['hf_hub_id']!r}")
    if entry['dataset'] not in DATASET_NAMES:
        raise ValueError(f"{name}: dataset must be one of {list(DATASET_NAMES)}, got {entry['dataset']!r}")
    labels = tuple(entry['label_names'])
    try:
        canonical = labels_for(len(labels))
    except ValueError as e:
        raise ValueError(f'{name}: {e}') from None
    if labels != canonical:
        raise ValueError(f'{name}: label_names must be the canonical order {canonical}, got {labels}')
    if not isinstance(entry['metrics'], Mapping):
        raise ValueError(f'{name}: metrics must be a dict, e.g. {{"accuracy": 0.88}}')


def published_cfgs(cfg_fn: Callable[..., Dict[str, Any]],
                   entries: Optional[Iterable[Mapping[str, Any]]] = None) -> Dict[str, Dict[str, Any]]:
    """`{'arch.tag': cfg}` for every release, built with `cfg_fn` (msanet.py's `_cfg`), ready to merge into
    the dict given to timm's `generate_default_cfgs`. `entries` defaults to `PUBLISHED`."""
    out: Dict[str, Dict[str, Any]] = {}
    for entry in (PUBLISHED if entries is None else entries):
        validate_entry(entry)
        name = f"{entry['arch']}.{entry['tag']}"
        if name in out:
            raise ValueError(f'{name} is listed twice in published.py')
        labels = tuple(entry['label_names'])
        metrics = ', '.join(f'{k}={v}' for k, v in entry['metrics'].items() if not isinstance(v, (dict, list)))
        out[name] = cfg_fn(
            hf_hub_id=entry['hf_hub_id'],
            num_classes=len(labels),
            label_names=labels,
            license='other',
            origin_url=f"https://huggingface.co/{entry['hf_hub_id']}",
            description=f"MSA-Net trained on {DATASET_NAMES[entry['dataset']]} ({len(labels)} classes)",
            notes=(f"dataset={entry['dataset']}; research / non-commercial dataset licence; {metrics}".rstrip('; '),),
        )
    return out
