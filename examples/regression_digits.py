"""Digit regression with noisy targets: plain smooth-L1 / L2 vs SuperLoss (SuperLoss paper, Sec. 3.2).

A LeNet-5 with one output regresses the digit value of scikit-learn's 8x8 digits; a share of the
training targets is replaced by a uniform draw in 0..9. SuperLoss uses the paper's fixed tau = 0.5
("the acceptable bound for regressing the right integer"). Prints the test mean absolute error.

    python examples/regression_digits.py      # or main(noise=0.4, epochs=40) from Python
"""
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from curriculoss import SuperLoss
from curriculoss.harness.models import LeNet5


def train(x, y, x_test, y_test, base, use_superloss, epochs, seed=0):
    torch.manual_seed(seed)
    model = LeNet5(1, 1, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = SuperLoss(tau=0.5, lam=1.0, num_samples=len(x))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(32):
            per_sample = base(model(x[idx]).squeeze(1), y[idx], reduction="none")
            loss = criterion(per_sample, idx) if use_superloss else per_sample.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (model(x_test).squeeze(1) - y_test).abs().mean().item()


def main(noise: float = 0.4, epochs: int = 40) -> None:
    """Train each base loss plain and under SuperLoss with `noise` of the targets replaced; print test MAEs."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target.astype(np.float32), test_size=0.2,
                                              stratify=digits.target, random_state=0)
    rng = np.random.default_rng(0)
    noisy = y_tr.copy()
    replace = rng.random(len(noisy)) < noise
    noisy[replace] = rng.integers(0, 10, replace.sum())
    tensors = [torch.from_numpy(a) for a in (x_tr, noisy, x_te, y_te)]

    print(f"digit regression, {noise:.0%} noisy targets, test MAE (lower is better)")
    for name, base in (("smooth-l1", F.smooth_l1_loss), ("l2", F.mse_loss)):
        plain = train(*tensors, base, False, epochs)
        sl = train(*tensors, base, True, epochs)
        print(f"{name:10s} plain {plain:.3f}   SuperLoss(tau=0.5) {sl:.3f}")


if __name__ == "__main__":
    main()
