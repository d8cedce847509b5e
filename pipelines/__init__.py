"""Thin command-line entry points over :mod:`toco_ray` (``python -m pipelines.<name> --help``)."""
