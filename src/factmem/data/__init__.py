"""Datasets: examples, the chat template, and the loaders configs name."""

from factmem.data.example import Example
from factmem.data.registry import dataset_names, load_examples

__all__ = ["Example", "dataset_names", "load_examples"]
