"""ExpressionModel: a loaded FER model together with every fact the tools need about it. Read this first.

A timm model carries its facts in `pretrained_cfg`: label names, input size, mean/std, and, where timm has no
field, cfg notes (calibration temperature, grey input, face framing; `timm_msanet.notes`). Those facts are
parsed here once, into typed fields, and every tool (predict, video, explain, eval, calibrate, export-onnx,
publish) takes this record instead of re-reading the notes. Where the weights came from (`WeightsSource`) is
known only to the loader, so it is a field of the record, never a key written into `pretrained_cfg`.

`load_model` returns the timm module itself (what a timm user expects: `model(x)`, `model.eval()`) and remembers
where its weights came from; `ExpressionModel.of(model)` makes the record of a module (a module built elsewhere,
with `timm.create_model`, gets source `module`), so the Python API takes either. A record follows its module's
cfg: when `pretrained_cfg` is replaced (`notes.set_temperature` does that), the record is parsed again.

Writing facts back (calibrate's temperature, `--img-size`, `--label-names`) goes through the record's own
methods, which update the cfg the way timm will save it (`save_for_hf`, `publish`) and the record together.
"""
import dataclasses
import weakref
from typing import Any, Dict, Mapping, Optional, Tuple

from ..labels import labels_for
from ..notes import expects_grey_input, framing_of, recorded_framing, set_temperature, temperature_of
from ..releases import pool_size_for
from .checks import check_input_size

SOURCE_KINDS = ('registered', 'release', 'checkpoint', 'random', 'module')


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights came from, as the loader saw it.

    kind: 'registered' (a timm name or tag: `msanet_r18`, `msanet_r18.ferplus`), 'release' (`hf-hub:` or
    `local-dir:`), 'checkpoint' (a file read by `read_checkpoint`), 'random' (`pretrained=False`) or 'module'
    (a module built outside the loader: its provenance is unknown).
    """
    kind: str = 'module'
    name: Optional[str] = None          # what was asked for: the tag, repo id, folder or checkpoint path
    checkpoint: Optional[str] = None    # the weights file read (kind 'checkpoint')
    entry: Optional[str] = None         # which weights of it: 'state_dict', 'state_dict_ema', 'model' or 'file'
    entry_origin: Optional[str] = None  # for a weights file: the train.py weights it was written from
    config: Optional[str] = None        # the config.json read beside the weights file

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f'WeightsSource kind {self.kind!r}: expected one of {SOURCE_KINDS}')

    @property
    def ema(self) -> Optional[bool]:
        """Whether a checkpoint's EMA weights were taken (None: not a train.py checkpoint, or unknown)."""
        kind = self.entry_origin if self.entry == 'file' else self.entry
        return {'state_dict_ema': True, 'state_dict': False, 'model': False}.get(kind) if kind else None


@dataclasses.dataclass
class ExpressionModel:
    """A loaded expression model: the timm module and its facts, parsed once from its cfg.

    module: the timm `nn.Module` (in eval mode after loading).
    label_names: class names in output order.
    temperature: calibration temperature T (probabilities are softmax(logits / T)); 1.0 when uncalibrated.
    grey_input: the weights were trained on grey faces. Whether the module converts colour input itself
        (`grey_step`) or the transform must (`transform`) is decided here, once.
    framing: where the training faces put the eyes (`notes.FRAMING_NOTE`; FER2013's when unrecorded), for
        face alignment; `framing_recorded` says whether the cfg recorded it.
    source: where the weights came from (`WeightsSource`).
    """
    module: Any
    label_names: Tuple[str, ...]
    temperature: float = 1.0
    grey_input: bool = False
    framing: Dict[str, float] = dataclasses.field(default_factory=lambda: framing_of(None))
    framing_recorded: bool = False
    source: WeightsSource = WeightsSource()
    _cfg: Any = dataclasses.field(default=None, repr=False, compare=False)

    # --------------------------------------------------------------------------- made once, from the cfg
    @classmethod
    def from_module(cls, module, source: Optional[WeightsSource] = None) -> 'ExpressionModel':
        """Parse a module's cfg into a record. `source`, when given, is remembered for the module (what the loader
        does), so later records of the same module (`of`) know where its weights came from."""
        if source is not None:
            _SOURCES[module] = source
        cfg = getattr(module, 'pretrained_cfg', None) or {}
        recorded = recorded_framing(cfg)
        return cls(module=module, label_names=_label_names(module, cfg), temperature=temperature_of(cfg),
                   grey_input=expects_grey_input(cfg), framing=recorded or framing_of(None),
                   framing_recorded=recorded is not None, source=_SOURCES.get(module, WeightsSource()), _cfg=cfg)

    @classmethod
    def of(cls, model) -> 'ExpressionModel':
        """The record of `model`: itself (re-read if its module's cfg was replaced since) if it is one, else a record
        of the module's cfg with the source the loader remembered for it (`module` for one built elsewhere)."""
        if isinstance(model, cls):
            return model.refreshed()
        import torch
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f'expected a model (a torch nn.Module from timm.create_model or '
                            f'timm_msanet.loading.load_model, or an ExpressionModel), got {type(model).__name__}')
        return cls.from_module(model)

    def refreshed(self) -> 'ExpressionModel':
        """This record, re-parsed if its module's `pretrained_cfg` was replaced since (the source stays)."""
        if getattr(self.module, 'pretrained_cfg', None) is not self._cfg:
            fresh = ExpressionModel.from_module(self.module)
            self.__dict__.update({f.name: getattr(fresh, f.name) for f in dataclasses.fields(self)})
        return self

    # ------------------------------------------------------------------------------------------ facts
    @property
    def pretrained_cfg(self) -> Mapping[str, Any]:
        return getattr(self.module, 'pretrained_cfg', None) or {}

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def architecture(self) -> Optional[str]:
        return self.pretrained_cfg.get('architecture')

    @property
    def grey_step(self) -> bool:
        """Whether the module turns colour input grey itself (an msanet built with `grey_input`)."""
        return bool(getattr(self.module, 'grey_input', False))

    @property
    def needs_grey_transform(self) -> bool:
        """Whether colour images must be made grey before the transform: trained on grey faces, no own step."""
        return self.grey_input and not self.grey_step

    def untrained_reason(self) -> Optional[str]:
        """Why the classifier has never learned expressions (None when it has, or when it cannot be told)."""
        if self.source.kind == 'random':
            return 'it has random weights (no pretrained weights were loaded)'
        if self.source.kind != 'checkpoint' and self.pretrained_cfg.get('tag') == 'tv_in1k':
            return ('its pretrained tag tv_in1k holds only an ImageNet ResNet-18 pre-extractor; the branches and '
                    'the classifier were never trained on expressions')
        return None

    def warn_if_untrained(self) -> Optional[str]:
        """Warn (UserWarning) when the labels would be guesses; returns the message, if any."""
        import warnings
        reason = self.untrained_reason()
        if reason is None:
            return None
        name = self.architecture or type(self.module).__name__
        msg = (f'{name}: {reason}, so its labels and probabilities are meaningless. For a real expression model '
               f'use the default tag (--model msanet_r18, i.e. msanet_r18.fer2013), a trained checkpoint or a release.')
        warnings.warn(msg, UserWarning, stacklevel=3)
        return msg

    def activation_bytes(self, input_size: Tuple[int, int, int]) -> int:
        """`checks.activation_bytes` of one image at `input_size`, measured once per size."""
        from .checks import activation_bytes
        measured = _ACTIVATIONS.setdefault(self.module, {})
        key = tuple(input_size)
        if key not in measured:
            measured[key] = activation_bytes(self.module, key)
        return measured[key]

    # ------------------------------------------------------------------------------------ preprocessing
    def data_config(self, img_size: Optional[int] = None) -> Dict[str, Any]:
        """timm's resolved eval data config of the module (at `img_size` when given)."""
        from timm.data import resolve_data_config
        cfg = resolve_data_config({}, model=self.module)
        if img_size:
            cfg['input_size'] = (cfg['input_size'][0], img_size, img_size)
        return cfg

    def transform(self, img_size: Optional[int] = None):
        """(transform, data config): PIL image -> the tensor the module takes, grey conversion included when
        the module has no grey step of its own (`utils.images.eval_transform`)."""
        from ..utils.images import eval_transform
        return eval_transform(self.data_config(img_size), getattr(self.module, 'in_chans', None),
                              self.needs_grey_transform)

    # ------------------------------------------------------------------------------------- writing facts
    def set_temperature(self, temperature: float, fit_split: str = 'validation') -> 'ExpressionModel':
        """Record T in the cfg notes (what `save_for_hf` and publish carry) and in this record."""
        set_temperature(self.module, temperature, fit_split)
        return self.refreshed()

    def set_label_names(self, names) -> 'ExpressionModel':
        names = tuple(str(n) for n in names)
        if len(names) != self.module.num_classes:
            raise ValueError(f'{len(names)} label names for a {self.module.num_classes}-class model; expected one '
                             f'name per class in output order')
        self.module.pretrained_cfg = dict(self.pretrained_cfg, label_names=names, num_classes=len(names))
        return self.refreshed()

    def set_input_size(self, img_size: int) -> 'ExpressionModel':
        """Make `img_size` the cfg's resolution (square), with the pool size that goes with it."""
        chans = tuple(self.pretrained_cfg.get('input_size') or (3,))[0]
        size = check_input_size((chans, img_size, img_size), '--img-size')
        cfg = dict(self.pretrained_cfg, input_size=size)
        cfg.pop('test_input_size', None)  # the caller's size is the one to evaluate at
        if cfg.get('pool_size'):
            cfg['pool_size'] = pool_size_for(size[1:])
        self.module.pretrained_cfg = cfg
        return self.refreshed()

    def engine(self, device='cpu', batch_size: int = 32, img_size: Optional[int] = None, amp: bool = False):
        """The batching engine on this record (`loading.engine.Classifier`)."""
        from .engine import Classifier
        return Classifier(self, device=device, batch_size=batch_size, img_size=img_size, amp=amp)


# What only the loader knows of a module, kept for as long as the module lives (weak keys, and values that do not
# refer to the module, so a model that is dropped is freed): where its weights came from, and its activation memory
# per input size (measured on a deep copy, so once).
_SOURCES: 'weakref.WeakKeyDictionary[Any, WeightsSource]' = weakref.WeakKeyDictionary()
_ACTIVATIONS: 'weakref.WeakKeyDictionary[Any, Dict[tuple, int]]' = weakref.WeakKeyDictionary()


def _label_names(module, cfg: Mapping[str, Any]) -> Tuple[str, ...]:
    """The cfg's label names when they name every output, else the canonical FER names, else the indices."""
    n = int(getattr(module, 'num_classes', 0) or 0)
    names = tuple(str(x) for x in (cfg.get('label_names') or ()))
    if len(names) == n:
        return names
    try:
        return labels_for(n)
    except ValueError:
        return tuple(str(i) for i in range(n))
