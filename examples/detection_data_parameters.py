"""Data Parameters for detection (Saxena et al. 2019, Sec. 3.3), on synthetic anchors.

A fixed set of images, each with a few ground-truth boxes; every box owns one instance parameter
(its dataset-wide id is the row). Each box has anchors assigned to it that take its class; the other
anchors are background (class 0). A share of the boxes carries a wrong class (noisy annotation):
all the anchors of such a box learn the wrong label. A linear classification head is trained with
cross-entropy over the anchors, whose logits are divided by their box's parameter; background
anchors use the mean parameter of the boxes in the mini-batch (``DataParameters.forward_detection``).

Prints the head's accuracy on clean object anchors, plain and with data parameters, and the mean
instance parameter of clean and of noisy boxes: the noisy boxes' parameters should end higher.

    python examples/detection_data_parameters.py      # or main(noise=0.3, epochs=15) from Python
"""
import torch
import torch.nn.functional as F

from curriculoss import DataParameters


def make_dataset(gen, images, boxes_per_image, anchors_per_box, background, classes, dim, noise):
    """Features, anchor classes (given and true), and for each anchor its box id (-1: background)."""
    centres = torch.randn(classes, dim, generator=gen) * 1.5
    num_boxes = images * boxes_per_image
    box_class = torch.randint(1, classes, (num_boxes,), generator=gen)
    noisy = torch.rand(num_boxes, generator=gen) < noise
    shift = torch.randint(1, classes - 1, (num_boxes,), generator=gen)
    given = torch.where(noisy, (box_class - 1 + shift) % (classes - 1) + 1, box_class)  # another object class
    per_image = []
    for i in range(images):
        ids = torch.arange(i * boxes_per_image, (i + 1) * boxes_per_image)
        box = torch.cat([ids.repeat_interleave(anchors_per_box), torch.full((background,), -1)])
        true = torch.where(box >= 0, box_class[box.clamp(min=0)], 0)
        label = torch.where(box >= 0, given[box.clamp(min=0)], 0)
        x = centres[true] + torch.randn(len(box), dim, generator=gen)
        per_image.append((x, label, true, box))
    return per_image, noisy, num_boxes


def batch(per_image, images):
    """Concatenate the anchors of some images; ``anchor_box`` indexes the batch's ``box_index``."""
    xs, labels, trues, boxes = zip(*(per_image[i] for i in images))
    box = torch.cat(boxes)
    box_index, anchor_box = torch.unique(box[box >= 0], return_inverse=True)
    full = torch.full_like(box, -1)
    full[box >= 0] = anchor_box
    return torch.cat(xs), torch.cat(labels), torch.cat(trues), full, box_index


def main(noise: float = 0.3, epochs: int = 15) -> None:
    """Train the head plain and with data parameters, `noise` of the boxes mislabelled; print the results."""
    classes, dim = 6, 8
    gen = torch.Generator().manual_seed(0)
    per_image, noisy, num_boxes = make_dataset(gen, 120, 4, 6, 40, classes, dim, noise)
    test, _, _ = make_dataset(torch.Generator().manual_seed(0), 30, 4, 6, 40, classes, dim, 0.0)
    x_test, _, y_test, _, _ = batch(test, range(len(test)))

    for use_dp in (False, True):
        torch.manual_seed(0)
        head = torch.nn.Linear(dim, classes)
        opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
        dp = DataParameters(classes, num_boxes, level="instance")
        dp_opt = dp.optimizer(instance_lr=0.5, momentum=0.9)
        order_gen = torch.Generator().manual_seed(1)
        for _ in range(epochs):
            for images in torch.randperm(len(per_image), generator=order_gen).split(8):
                x, label, _, anchor_box, box_index = batch(per_image, images.tolist())
                logits = head(x)
                if use_dp:
                    logits = dp.forward_detection(logits, label, anchor_box, box_index)
                loss = F.cross_entropy(logits, label)
                opt.zero_grad()
                dp_opt.zero_grad()
                loss.backward()
                opt.step()
                if use_dp:
                    dp_opt.step()
        with torch.no_grad():
            pred = head(x_test).argmax(1)  # inference: the model's logits as they are
            objects = y_test > 0
            acc = (pred[objects] == y_test[objects]).float().mean().item()
        name = "CE + instance data parameters" if use_dp else "CE"
        print(f"{name:32s} accuracy on clean object anchors: {acc:.3f}")
        if use_dp:
            sigma = dp.instance_sigma
            print(f"mean box parameter: clean {sigma[~noisy].mean().item():.3f}, noisy {sigma[noisy].mean().item():.3f} "
                  f"({int(noisy.sum())} of {num_boxes} boxes noisy)")


if __name__ == "__main__":
    main()
