"""Checked types for the command-line options of every `timm-msanet` command.

argparse calls these on the option's text; a value they refuse ends the command at once with argparse's usage
line and `error: argument --NAME: ...`, before any model is loaded or file is read. None of them imports torch
unless the value asks for a GPU (so `--help` stays instant).
"""
import argparse
import math
import re


def _int(text: str, lo: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}') from None
    if value < lo:
        raise argparse.ArgumentTypeError(f'expected {what}, got {value}')
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1 (batch sizes, step counts, k of top-k)."""
    return _int(text, 1, 'an integer of at least 1')


def non_negative_int(text: str) -> int:
    """An integer of at least 0 (loader workers: 0 loads in the main process)."""
    return _int(text, 0, 'an integer of at least 0')


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}') from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}')
    return value


def finite_float(text: str) -> float:
    """Any finite number."""
    return _float(text, 'a finite number')


def non_negative_float(text: str) -> float:
    """A finite number of at least 0 (tolerances, smoothing windows, face margins)."""
    value = _float(text, 'a finite number of at least 0')
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected a finite number of at least 0, got {text!r}')
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (frame rates)."""
    value = _float(text, 'a finite number above 0')
    if value <= 0:
        raise argparse.ArgumentTypeError(f'expected a finite number above 0, got {text!r}')
    return value


def face_margin(text: str) -> float:
    """A crop margin around a detected face, as a fraction of its side on every side: 0 to 2."""
    value = non_negative_float(text)
    if value > 2:
        raise argparse.ArgumentTypeError(f'expected a fraction of the face side from 0 to 2, got {text!r}')
    return value


def device(text: str) -> str:
    """'cpu', 'cuda' or 'cuda:N' on a machine that has that GPU, or 'mps' where torch has it."""
    if text == 'cpu':
        return text
    match = re.fullmatch(r'(cuda)(?::(\d+))?|(mps)', text or '')
    if not match:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    import torch
    if match.group(3):
        if not (getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError('mps was asked for, but this torch has no MPS device here; use cpu')
        return text
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f'{text} was asked for, but torch finds no CUDA GPU on this machine '
                                         f'(torch {torch.__version__}); use cpu')
    index = int(match.group(2) or 0)
    if index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f'{text} was asked for, but this machine has {torch.cuda.device_count()} '
                                         f'CUDA GPU(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})')
    return text
