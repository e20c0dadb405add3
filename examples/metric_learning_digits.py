"""Metric learning on digit pairs with noisy pair labels: contrastive loss vs SuperContrastiveLoss (Eq. 5).

An MLP embeds scikit-learn's 8x8 digits; training pairs are labelled positive when their digits match,
and a share of the pair labels is flipped. Prints nearest-neighbour accuracy (recall@1) on the test
digits, searched among the training digits.

    python examples/metric_learning_digits.py      # or main(noise=0.3, steps=400) from Python
"""
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from curriculoss import SuperContrastiveLoss, contrastive_loss
from curriculoss.harness.models import MLP


def recall_at_1(model, x_tr, y_tr, x_te, y_te):
    with torch.no_grad():
        a, b = F.normalize(model(x_te), dim=1), F.normalize(model(x_tr), dim=1)
        nearest = (a @ b.T).argmax(1)
    return (y_tr[nearest] == y_te).float().mean().item()


def main(noise: float = 0.3, steps: int = 400) -> None:
    """Train the embedding with both losses, `noise` of the pair labels flipped; print recall@1."""
    digits = load_digits()
    x = torch.from_numpy((digits.data / 16.0).astype(np.float32))
    y = torch.from_numpy(digits.target)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)

    for use_superloss in (False, True):
        torch.manual_seed(0)
        model = MLP(64, 32, hidden=(128,))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        criterion = SuperContrastiveLoss(margin=0.7, lam=1.0, tau="avg")
        gen = torch.Generator().manual_seed(1)
        for _ in range(steps):
            i = torch.randint(0, len(x_tr), (128,), generator=gen)
            # half of the partners share the digit, half are random
            same = torch.rand(128, generator=gen) < 0.5
            j = torch.randint(0, len(x_tr), (128,), generator=gen)
            for k in torch.nonzero(same).flatten():
                candidates = torch.nonzero(y_tr == y_tr[i[k]]).flatten()
                j[k] = candidates[torch.randint(0, len(candidates), (1,), generator=gen)]
            label = (y_tr[i] == y_tr[j]).long()
            flip = torch.rand(128, generator=gen) < noise
            label = torch.where(flip, 1 - label, label)
            e1, e2 = F.normalize(model(x_tr[i]), dim=1), F.normalize(model(x_tr[j]), dim=1)
            loss = criterion(e1, e2, label) if use_superloss else contrastive_loss(e1, e2, label, margin=0.7)
            opt.zero_grad()
            loss.backward()
            opt.step()
        name = "SuperContrastiveLoss" if use_superloss else "contrastive"
        print(f"{name:22s} test recall@1: {recall_at_1(model, x_tr, y_tr, x_te, y_te):.3f}")


if __name__ == "__main__":
    main()
