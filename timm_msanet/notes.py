"""A model's facts as its pretrained_cfg `notes` carry them: the one place that reads and writes them.

timm's PretrainedCfg has no field for a calibration temperature, for "trained on grey faces" or for the face
framing a model was trained with; `notes` (a tuple of strings) survives every timm round trip (config.json,
save_for_hf, the Hub), so these facts live there, one note each:

* `calibration: temperature=T (...)`: softmax(logits / T) gives calibrated probabilities (calibration.py fits
  it); absent means 1.0. Bounds MIN_T..MAX_T.
* GREY_INPUT_NOTE: trained on greyscale faces (FER2013, FERPlus); tools convert colour images to grey first.
* `face framing: eye_y=Y eye_dist=D`: where the training faces put the eyes (faces.py aligns to it);
  DEFAULT_FRAMING (FER2013's) when absent.

Every other module asks here (`temperature_of`, `expects_grey_input`, `recorded_framing`, `framing_of`) and
writes through here (`set_temperature`, `calibration_note`, FRAMING_NOTE, GREY_INPUT_NOTE).
"""
import math
import re
from typing import Any, Dict, Mapping, Optional

from .utils.errors import ToolError

MIN_T, MAX_T = 0.05, 20.0
CALIBRATION_NOTE = 'calibration: temperature='
_NOTE_RE = re.compile(re.escape(CALIBRATION_NOTE) + r'(\S+)')
# In a cfg's `notes`: the weights were trained on greyscale faces (replicated to 3 channels), so the tools
# convert colour photos to grey before the model's transform. timm's PretrainedCfg has no field for it.
GREY_INPUT_NOTE = 'input: greyscale (trained on grey faces; convert colour images to grey, then to 3 channels)'
# Where the training faces of a model put the eyes, as fractions of the square crop's side: the eye midpoint's
# height and the distance between the eye centres. Releases carry it in their cfg notes (FRAMING_NOTE);
# DEFAULT_FRAMING is FER2013's, measured with this detector on its training images (docs/inference.md).
FRAMING_NOTE = 'face framing: eye_y={eye_y:.3f} eye_dist={eye_dist:.3f}'
DEFAULT_FRAMING = dict(eye_y=0.396, eye_dist=0.362)


class FramingError(ToolError):
    """The face framing of a dataset could not be measured (too few faces found) or was given wrong."""


def check_temperature(value: Any, where: str = 'temperature') -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float('nan')
    if not (math.isfinite(t) and MIN_T <= t <= MAX_T):
        raise ValueError(f'{where}: {value!r} is not a valid temperature; expected a number from {MIN_T} to {MAX_T}')
    return t


def temperature_of(cfg: Optional[Mapping[str, Any]]) -> float:
    """The temperature a model's pretrained_cfg records (1.0 when it records none)."""
    for note in tuple((cfg or {}).get('notes') or ()):
        match = _NOTE_RE.match(str(note))
        if match:
            return check_temperature(match.group(1).rstrip(';,'), 'pretrained_cfg notes')
    return 1.0


def calibration_note(temperature: float, fit_split: str = 'validation') -> str:
    return (f'{CALIBRATION_NOTE}{temperature:.4f} (fitted on the {fit_split} split by timm-msanet calibrate; '
            f'probabilities are softmax(logits / temperature))')


def set_temperature(model, temperature: float, fit_split: str = 'validation'):
    """Record T in `model.pretrained_cfg['notes']` (replacing an earlier one; 1.0 removes it). Returns model."""
    t = check_temperature(temperature)
    cfg = dict(model.pretrained_cfg or {})
    notes = [n for n in tuple(cfg.get('notes') or ()) if not str(n).startswith(CALIBRATION_NOTE)]
    if t != 1.0:
        notes.append(calibration_note(t, fit_split))
    cfg['notes'] = tuple(notes)
    model.pretrained_cfg = cfg
    return model


def expects_grey_input(pretrained_cfg: Optional[Mapping[str, Any]]) -> bool:
    """Whether a model's cfg says it was trained on greyscale faces (see GREY_INPUT_NOTE)."""
    return GREY_INPUT_NOTE in tuple((pretrained_cfg or {}).get('notes') or ())


def recorded_framing(pretrained_cfg: Optional[Mapping[str, Any]]) -> Optional[Dict[str, float]]:
    """The face framing a model's cfg notes record (FRAMING_NOTE), else None; FramingError when the note is
    there but its values are not a framing (outside publish's 0.1-0.9 bounds: an eye distance of 0.0015 would
    make the aligned crop 600 times the face)."""
    prefix = FRAMING_NOTE.split(':')[0] + ':'
    for note in tuple((pretrained_cfg or {}).get('notes') or ()):
        if isinstance(note, str) and note.startswith(prefix):
            try:
                values = dict(part.split('=', 1) for part in note[len(prefix):].split())
                return parse_framing(f"{values['eye_y']},{values['eye_dist']}")
            except (KeyError, ValueError) as e:
                raise FramingError(f'the cfg note {note!r}: expected "face framing: eye_y=Y eye_dist=D" with two '
                                   f'numbers') from e
    return None


def framing_of(pretrained_cfg: Optional[Mapping[str, Any]]) -> Dict[str, float]:
    """The face framing a model was trained with (its cfg notes), else DEFAULT_FRAMING."""
    return recorded_framing(pretrained_cfg) or dict(DEFAULT_FRAMING)


def parse_framing(text: str) -> Dict[str, float]:
    """'EYE_Y,EYE_DIST' (fractions of the crop's side) as a framing dict; FramingError when it is not that."""
    try:
        eye_y, eye_dist = (float(v) for v in text.split(','))
    except ValueError:
        raise FramingError(f'face framing {text!r}: expected EYE_Y,EYE_DIST, two fractions of the crop side '
                           f'such as 0.396,0.362, or a folder of training images to measure it on') from None
    if not (0.1 <= eye_y <= 0.9 and 0.1 <= eye_dist <= 0.9):
        raise FramingError(f'face framing {text!r}: eye height and eye distance are fractions of the crop side '
                           f'between 0.1 and 0.9 (FER2013: 0.396,0.362)')
    return dict(eye_y=eye_y, eye_dist=eye_dist)
