"""factmem: continual memorization of factoids in language models (REMIX reproduction toolkit)."""

import os

__version__ = "0.1.0"


def enable_huge_pages() -> bool:
    """Ask PyTorch's CPU allocator to back tensors of >= 2 MB with transparent huge pages
    (PyTorch's own switch THP_MEM_ALLOC_ENABLE), unless the environment already decides;
    True when they are asked for. Why: see factmem.kernels. Results do not depend on it.

    Read by torch at its first CPU allocation, so it is set here, when factmem is imported
    (before any factmem module imports torch); where the kernel has no THP it is ignored."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    return os.environ["THP_MEM_ALLOC_ENABLE"] == "1"


enable_huge_pages()
