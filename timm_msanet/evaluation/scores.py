"""Calibrated probabilities and the metrics that say how honest a score is.

FER models are over-confident: a 0.9 "happiness" is right less often than 90% of the time. Temperature
scaling (Guo et al., *On Calibration of Modern Neural Networks*, ICML 2017) divides the logits by one
number T fitted on held-out data; the argmax, and so accuracy, never changes.

* The fit minimises the mean negative log-likelihood over beta = 1/T in [1/20, 1/0.05] by golden-section
  search: NLL is convex in beta (a log-sum-exp of terms linear in beta minus a linear term), so the
  search finds the optimum without a learning rate or an iteration budget to tune.
* Metrics: ECE with 15 equal-width bins of the top-class confidence (a bin's |accuracy - mean
  confidence| weighted by its share of samples; a confidence of exactly 1 falls in the last bin); NLL
  the mean of -log p(true class); Brier the mean over samples of the squared distance between the
  probability vector and the one-hot label (summed over classes, so it ranges 0..2).

Used by eval (every metrics.json) and calibrate (the fit); probabilities themselves are
`loading.engine.calibrated` (softmax(logits / T)), the engine's.
"""
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

from ..notes import MAX_T, MIN_T
from ..utils.outputs import save_figure

N_BINS = 15


# ---------------------------------------------------------------------------------------------- metrics
def reliability_bins(probs, targets, n_bins: int = N_BINS):
    """Per equal-width confidence bin: (count, accuracy, mean confidence)."""
    import torch
    conf, pred = probs.max(-1)
    correct = (pred == targets).float()
    idx = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        bins.append(dict(lower=b / n_bins, upper=(b + 1) / n_bins, count=n,
                         accuracy=float(correct[mask].mean()) if n else None,
                         confidence=float(conf[mask].mean()) if n else None))
    return bins


def calibration_metrics(probs, targets, n_bins: int = N_BINS) -> Dict[str, Any]:
    """ECE (`n_bins` equal-width bins), NLL and Brier score of probabilities N x C against targets N."""
    import torch
    probs = probs.float()
    targets = targets.long()
    total = probs.shape[0]
    if total == 0:
        raise ValueError('no samples to measure calibration on')
    bins = reliability_bins(probs, targets, n_bins)
    ece = sum(b['count'] / total * abs(b['accuracy'] - b['confidence']) for b in bins if b['count'])
    p_true = probs.gather(1, targets[:, None]).squeeze(1)
    nll = float(-torch.log(p_true.clamp_min(1e-12)).mean())
    onehot = torch.nn.functional.one_hot(targets, probs.shape[1]).float()
    brier = float(((probs - onehot) ** 2).sum(-1).mean())
    return dict(ece=float(ece), nll=nll, brier=brier, n_bins=n_bins, reliability=bins)


def fit_temperature(logits, targets, lo: float = MIN_T, hi: float = MAX_T, iters: int = 80) -> float:
    """The T minimising the mean NLL of softmax(logits / T), by golden-section search over beta = 1/T."""
    import torch
    logits = logits.double()
    targets = targets.long()
    true_logit = logits.gather(1, targets[:, None]).squeeze(1)

    def nll(beta: float) -> float:
        return float((torch.logsumexp(beta * logits, -1) - beta * true_logit).mean())

    a, b = 1.0 / hi, 1.0 / lo
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(d)
    return float(1.0 / ((a + b) / 2))


def plot_reliability(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, title: str = '',
                     overwrite: bool = False) -> bool:
    """Reliability diagram: accuracy against confidence per bin, one line per curve, with the diagonal and
    the share of samples per bin. Needs matplotlib (the `plot` extra); returns False without it."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], color='grey', lw=1, ls='--', label='perfect calibration')
    for (name, bins), color in zip(curves.items(), ('tab:red', 'tab:blue', 'tab:green')):
        used = [b for b in bins if b['count']]
        ax.plot([b['confidence'] for b in used], [b['accuracy'] for b in used], marker='o', color=color, label=name)
        total = sum(b['count'] for b in bins)
        hist.bar([(b['lower'] + b['upper']) / 2 for b in bins], [b['count'] / total for b in bins],
                 width=1 / len(bins), alpha=0.45, color=color, label=name)
    ax.set_ylabel('accuracy')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc='upper left')
    ax.set_title(title, fontsize=9)
    hist.set_xlabel('confidence (top-class probability)')
    hist.set_ylabel('share')
    fig.tight_layout()
    save_figure(fig, path, overwrite)
    return True
