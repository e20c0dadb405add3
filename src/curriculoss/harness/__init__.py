"""The training harness: everything the `curriculoss` command runs, built on the library.

- `data`: the data readers, one module per format, and `load`
- `models`: the networks (`--model`) and their default learning rates
- `methods`: each training method (CE, SuperLoss, data parameters, IMAE, ...) as a loss step
- `augment`: batch-wise, seeded augmentation on the device
- `train`: the training loop, run folders, checkpoints
- `divergence`: the collapse rule; `runlock`: one run per folder
- `bench`, `reproduce`, `plots`
- `cli`: the command line

The library (`curriculoss` and its loss, noise and flagging modules) never imports this package.
Nothing is imported here: `import curriculoss.harness` stays cheap.
"""
