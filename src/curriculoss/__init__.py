"""curriculoss: curriculum and noise-robust losses for PyTorch.

Losses and their per-sample signals:

- `superloss`, `SuperLoss`, `superloss_confidence` (Castells et al. 2020)
- `DataParameters` (Saxena et al. 2019)
- `imae`, `IMAE`, `sample_weight` (Wang et al., IMAE)
- baselines: `mae_loss`, `gce_loss`, `sce_loss`, `focal_loss` and their modules
- `lambertw`, the principal branch of the Lambert W function, tensor-native

Finding the mislabelled samples: `Recorder` (`curriculoss.recorder`) records the per-sample
loss, confidence and margin of any training loop; `curriculoss.flag` ranks the samples.

Around them: `IndexedDataset` (a dataset that also returns each sample's index, which the
stateful methods and the recorder need), `curriculoss.noise` (label noise), and
`curriculoss.integrations` (Lightning and Hugging Face `Trainer` callbacks). The modules above are the library; none of them
imports `curriculoss.harness`, the training harness built on them (data readers, models, methods,
the training loop, bench, reproduce and the command line, `curriculoss --help`).
"""
from curriculoss.contrastive import SuperContrastiveLoss, contrastive_loss
from curriculoss.data_parameters import DataParameters, SparseSGD
from curriculoss.focal import FocalLoss, focal_loss
from curriculoss.gce import GCELoss, gce_loss
from curriculoss.imae import IMAE, imae, sample_weight
from curriculoss.indexed import IndexedDataset
from curriculoss.lambertw import lambertw
from curriculoss.mae import MAELoss, mae_loss
from curriculoss.recorder import Recorder
from curriculoss.sce import SCELoss, sce_loss
from curriculoss.superloss import SuperLoss, superloss, superloss_confidence

__version__ = "0.4.2"

__all__ = [
    "lambertw",
    "superloss_confidence",
    "superloss",
    "SuperLoss",
    "contrastive_loss",
    "SuperContrastiveLoss",
    "DataParameters",
    "SparseSGD",
    "imae",
    "IMAE",
    "sample_weight",
    "mae_loss",
    "MAELoss",
    "gce_loss",
    "GCELoss",
    "sce_loss",
    "SCELoss",
    "focal_loss",
    "FocalLoss",
    "Recorder",
    "IndexedDataset",
]
