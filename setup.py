"""Builds deeparch's one optional C extension; everything else is in pyproject.toml.

``deeparch.layers._convpool`` (fused convolution -> max-pool -> ReLU for the first layer of
small CNNs, see ``src/deeparch/layers/fast.py``) is plain C against Python's API: no
PyTorch headers, so it builds in pip's isolated build environment with only setuptools.
It is optional: where no C compiler is available the install goes on without it and
deeparch uses its PyTorch formulation of the same layers.
"""
import sys

from setuptools import Extension, setup

compile_args = [] if sys.platform == "win32" else ["-O3", "-std=gnu99", "-ffp-contract=fast", "-Wno-psabi"]
link_args = [] if sys.platform == "win32" else ["-pthread"]

setup(ext_modules=[Extension("deeparch.layers._convpool", ["src/deeparch/layers/_convpool.c"],
                             extra_compile_args=compile_args, extra_link_args=link_args,
                             optional=True)])
