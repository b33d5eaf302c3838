"""prefwork: make and measure preference data for LLM alignment.

The code lives in the repository's top-level folders (``pipeline``, ``evaluators``, ``train``,
``flows``, ``data``); the distribution installs them as subpackages of ``prefwork``
(``prefwork.pipeline`` ...), so an installed prefwork claims one import name, not four generic
ones (see docs/architecture.md).
"""
__version__ = "0.2.0"
