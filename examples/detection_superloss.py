"""SuperLoss on the box-classification loss of a detector, on synthetic anchors (SuperLoss Sec. 2.4).

Each image has anchors with a feature vector; an anchor is background (class 0), one of the object
classes, or ignored (overlap between the thresholds: assigned to neither). A linear classification head
is trained with a focal loss (RetinaNet style), plain or under SuperLoss with tau = 'avg': no per-anchor
state, ignored anchors masked out. A share of the object labels is flipped at random (noisy boxes).
Prints the accuracy of the head on clean anchors.

    python examples/detection_superloss.py      # or main(noise=0.4, steps=300) from Python
"""
import torch

from curriculoss import SuperLoss, focal_loss


def make_anchors(gen, images, anchors, classes, dim):
    centres = torch.randn(classes, dim, generator=gen) * 2.0
    target = torch.randint(0, classes, (images, anchors), generator=gen)
    target[torch.rand(images, anchors, generator=gen) < 0.7] = 0  # most anchors are background
    features = centres[target] + torch.randn(images, anchors, dim, generator=gen)
    ignore = torch.rand(images, anchors, generator=gen) < 0.1
    return features, target, ignore


def main(noise: float = 0.4, steps: int = 300) -> None:
    """Train the head plain and under SuperLoss with `noise` of the object labels flipped; print accuracies."""
    classes, dim = 6, 16
    gen = torch.Generator().manual_seed(0)
    x_test, y_test, _ = make_anchors(gen, 20, 200, classes, dim)

    for name, use_superloss in (("focal", False), ("focal + SuperLoss(tau='avg')", True)):
        torch.manual_seed(0)
        head = torch.nn.Linear(dim, classes)
        opt = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9)
        criterion = SuperLoss(tau="avg", lam=1.0)
        data_gen = torch.Generator().manual_seed(1)
        for _ in range(steps):
            x, y, ignore = make_anchors(data_gen, 4, 200, classes, dim)
            flip = (y > 0) & (torch.rand(y.shape, generator=data_gen) < noise)
            y = torch.where(flip, torch.randint(1, classes, y.shape, generator=data_gen), y)
            logits = head(x)
            per_anchor = focal_loss(logits.reshape(-1, classes), y.reshape(-1), gamma=2.0, reduction="none").reshape(y.shape)
            if use_superloss:
                loss = criterion(per_anchor, mask=ignore)
            else:
                loss = per_anchor[~ignore].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = head(x_test).argmax(-1)
            objects = y_test > 0
            acc = (pred[objects] == y_test[objects]).float().mean().item()
        print(f"{name:30s} accuracy on clean object anchors: {acc:.3f}")


if __name__ == "__main__":
    main()
