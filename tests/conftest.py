"""Shared test setup: the reference oracles are importable as ``reference.*``; torch uses one thread."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)
