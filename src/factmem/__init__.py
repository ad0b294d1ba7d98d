"""factmem: continual memorization of factoids in language models (REMIX reproduction toolkit)."""

__version__ = "0.1.0"
