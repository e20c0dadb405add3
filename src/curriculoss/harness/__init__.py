"""The training harness: everything the ``curriculoss`` command runs, built on the library.

- :mod:`~curriculoss.harness.data`: the data readers, one module per format, and :func:`~curriculoss.harness.data.load`
- :mod:`~curriculoss.harness.models`: the networks (``--model``) and their default learning rates
- :mod:`~curriculoss.harness.methods`: each training method (CE, SuperLoss, data parameters, IMAE, ...) as a loss step
- :mod:`~curriculoss.harness.augment`: batch-wise, seeded augmentation on the device
- :mod:`~curriculoss.harness.train`: the training loop, run folders, checkpoints
- :mod:`~curriculoss.harness.divergence`: the collapse rule; :mod:`~curriculoss.harness.runlock`: one run per folder
- :mod:`~curriculoss.harness.bench`, :mod:`~curriculoss.harness.reproduce`, :mod:`~curriculoss.harness.plots`
- :mod:`~curriculoss.harness.cli`: the command line

The library (:mod:`curriculoss` and its loss, noise and flagging modules) never imports this package.
Nothing is imported here: ``import curriculoss.harness`` stays cheap.
"""
