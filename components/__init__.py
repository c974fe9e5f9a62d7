"""KFP components of the platform: each a short typed function around one core call (``fusionrec``).

The functions in :mod:`components.training` are plain Python; :func:`components.training.build` turns
them into KFP components on a given container image, so the image is a parameter of the pipeline.
"""
